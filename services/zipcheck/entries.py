"""The second pass: every image and caption read and judged by its bytes.

Image verification is *structural*: Pillow parses the header (format, size, mode), PNG files
are walked chunk by chunk with their CRCs checked up to ``IEND`` (``Image.verify``), JPEG
files must have a well-formed marker sequence and an end-of-image marker after the scan data
(catches the common cut-off upload), WebP files must be as long as their RIFF header says.
With ``ZipLimits.decode_pixels`` every image's pixels are decoded too (JPEG at 1/8 scale).
"""

from __future__ import annotations

import contextlib
import struct
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image

from services.sniff import sniff_archive, sniff_format
from services.zipcheck.limits import ZipLimits
from services.zipcheck.reader import EntryReader, StopReading, as_file
from services.zipcheck.report import NESTED_ARCHIVE, UNSUPPORTED_COMPRESSION, Findings, show

IMAGE_EXTENSIONS: dict[str, str] = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
_FRIENDLY_EXT = {"JPEG": "JPG", "PNG": "PNG", "WEBP": "WebP"}
_SUGGESTED_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


@dataclass
class Item:
    """An entry that passed the first pass, to be read."""

    index: int
    info: zipfile.ZipInfo
    kind: str  # "image" | "caption"
    stem_key: str


class EntryChecker:
    """Reads the entries the first pass kept and tells ``findings`` what is wrong with
    them; an entry that cannot be read is a problem of its own, never the end of the
    check (except past the cap on unpacked bytes: :class:`StopReading`)."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.limits = findings.limits
        self.reader = EntryReader(findings)

    def check_contents(self, zf: zipfile.ZipFile, items: list[Item]) -> None:
        findings = self.findings
        image_stems = {it.stem_key for it in items if it.kind == "image"}
        for item in items:
            name = item.info.orig_filename
            if item.kind == "caption" and item.stem_key not in image_stems:
                findings.warnings.append(
                    f"{show(name)}: there is no image with the same name, so this caption will "
                    "not be used."
                )
            try:
                data = self.reader.read(zf, item.index, item.info)
                if data is None:
                    continue
                if item.kind == "image":
                    self.check_image(item, data)
                else:
                    self.check_caption(item, data, item.stem_key in image_stems)
            except StopReading:
                raise
            except zipfile.BadZipFile as exc:
                detail = " (checksum mismatch)" if "CRC" in str(exc) else ""
                findings.entry_problem(
                    item.index, name, f"could not be read: the zip is damaged{detail}."
                )
            except NotImplementedError:
                findings.entry_problem(item.index, name, UNSUPPORTED_COMPRESSION)
            except Exception:
                findings.entry_problem(item.index, name, "could not be read (corrupt data).")
            finally:
                # Let go of this entry before the next one is read: two big entries at
                # once would double the check's peak memory.
                data = None

    def check_caption(self, item: Item, data: bytes | bytearray, matched: bool) -> None:
        name = item.info.orig_filename
        if sniff_archive(data[:512]):
            self.findings.entry_problem(item.index, name, NESTED_ARCHIVE)
            return
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = None
        if text is None or "\x00" in text:
            self.findings.entry_problem(
                item.index, name, "is not plain text. Save captions as UTF-8 text files."
            )
            return
        if matched:
            self.findings.caption_count += 1

    def check_image(self, item: Item, data: bytes | bytearray) -> None:
        findings = self.findings
        name = item.info.orig_filename
        ext = PurePosixPath(name.replace("\\", "/")).suffix.lower()
        expected = IMAGE_EXTENSIONS[ext]
        actual = sniff_format(data[:512])
        if actual == "archive":
            findings.entry_problem(item.index, name, NESTED_ARCHIVE)
            return
        if actual is None:
            findings.entry_problem(
                item.index,
                name,
                "is not a valid image (it is damaged or is not really a "
                f"{_FRIENDLY_EXT[expected]}).",
            )
            return
        if actual != expected:
            if actual in _SUGGESTED_EXT:
                text = (
                    f"is really a {_FRIENDLY_EXT[actual]} image but is named {ext}. "
                    f"Rename it to end in {_SUGGESTED_EXT[actual]}."
                )
            else:
                text = (
                    f"is really a {actual} image, not {_FRIENDLY_EXT[expected]}. Only JPG, PNG "
                    "and WebP images are supported; please convert it."
                )
            findings.entry_problem(item.index, name, text)
            return
        problem, size = self.inspect_image(data, expected)
        if problem is not None:
            findings.entry_problem(item.index, name, problem)
            return
        findings.image_count += 1
        if min(size) < self.limits.min_side_warning:
            findings.small_images.append(name)

    def inspect_image(
        self, data: bytes | bytearray, fmt: str
    ) -> tuple[str | None, tuple[int, int]]:
        """What is wrong with an image whose magic bytes say ``fmt`` (None if nothing),
        and its size."""
        limits = self.limits
        damaged = "is damaged or incomplete and cannot be used."
        try:
            with Image.open(as_file(data), formats=[fmt]) as im:
                width, height = im.size
                if width <= 0 or height <= 0:
                    return damaged, (0, 0)
                if width * height > limits.max_image_pixels:
                    return _too_many_pixels(width, height, limits), (width, height)
                if fmt == "PNG":
                    im.verify()  # every chunk's CRC, through IEND
            if fmt == "JPEG":
                scan = jpeg_scan_start(data)
                if scan is None or data.rfind(b"\xff\xd9", scan) < 0:
                    return damaged, (width, height)
            elif fmt == "WEBP" and int.from_bytes(data[4:8], "little") + 8 > len(data):
                return damaged, (width, height)
            if limits.decode_pixels:
                with Image.open(as_file(data), formats=[fmt]) as im:
                    if fmt == "JPEG":
                        im.draft(None, (max(1, width // 8), max(1, height // 8)))
                    im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return _too_many_pixels(*_header_size(data, fmt), limits), (0, 0)
        except Exception:
            return damaged, (0, 0)
        return None, (width, height)


def jpeg_scan_start(data: bytes | bytearray) -> int | None:
    """Offset where the first scan's entropy-coded data starts, or None if malformed."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:
            return None
        seglen = int.from_bytes(data[i + 2 : i + 4], "big")
        if seglen < 2:
            return None
        if marker == 0xDA:
            return i + 2 + seglen
        i += 2 + seglen
    return None


def _too_many_pixels(width: int, height: int, limits: ZipLimits) -> str:
    if width and height:
        size = f"is {width} × {height} pixels ({_megapixels(width * height)})"
    else:
        size = "has too many pixels"
    return f"{size}; images may have at most {_megapixels(limits.max_image_pixels)}."


def _megapixels(pixels: int) -> str:
    mp = pixels / 1e6
    return f"{mp:.0f} megapixels" if mp >= 10 else f"{mp:.1f} megapixels"


def _header_size(data: bytes | bytearray, fmt: str) -> tuple[int, int]:
    """Best-effort image size when Pillow refused to open the image (decompression bomb)."""
    with contextlib.suppress(Exception):
        if fmt == "PNG" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
    return 0, 0
