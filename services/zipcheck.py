"""Validate a LoRA training zip before it is uploaded anywhere.

The checker never extracts anything and never writes to disk. It reads the central directory,
judges every entry by name and metadata, then streams the images and captions through
``zipfile`` in bounded chunks (which also verifies each entry's CRC) and inspects the image
bytes with Pillow.

Image verification is *structural*: Pillow parses the header (format, size, mode), PNG files are
walked chunk by chunk with their CRCs checked up to ``IEND`` (``Image.verify``), JPEG files must
have a well-formed marker sequence and an end-of-image marker after the scan data (catches the
common cut-off upload), WebP files must be as long as their RIFF header says. Decoding every
pixel costs several times more than reading the zip, so it is opt-in via
``ZipLimits.decode_pixels`` (JPEG is then decoded at 1/8 scale, PNG and WebP in full).

All problems are collected into one :class:`ZipReport`; its messages are shown verbatim to users,
so they are plain words and name the entry they are about. Only :class:`ZipCheckError` escapes
:func:`check_zip`, and only when the file itself cannot be opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import stat
import struct
import unicodedata
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from PIL import Image

from services.errors import UserFacingError
from services.sniff import sniff_archive, sniff_format

__all__ = [
    "ZipCheckError",
    "ZipLimits",
    "ZipReport",
    "ZipTooLarge",
    "ZipUnreadable",
    "check_zip",
    "check_zip_async",
    "download_to_file",
    "sniff_format",
]

MB = 1024 * 1024

IMAGE_EXTENSIONS: dict[str, str] = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
CAPTION_EXTENSION = ".txt"
ARCHIVE_EXTENSIONS = frozenset(
    {".zip", ".zipx", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".tbz2", ".xz", ".txz", ".zst"}
)
JUNK_DIRS = frozenset({"__macosx", ".trashes", ".fseventsd", ".spotlight-v100"})
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})

# Compression ratios are only meaningful for entries big enough to matter: a 2 KB caption made
# of one repeated word legitimately compresses 100:1.
_RATIO_MIN_BYTES = MB
# Entries below _CHUNK are read in one go and used without a copy; bigger ones are copied
# into one buffer in _BIG_ENTRY_CHUNK pieces, so peak memory stays near the entry's size.
_CHUNK = 8 * MB
_BIG_ENTRY_CHUNK = MB
_SUPPORTED_COMPRESSION = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_MAX_LISTED_NAMES = 10
_MAX_SHOWN_NAME = 120
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_FRIENDLY_EXT = {"JPEG": "JPG", "PNG": "PNG", "WEBP": "WebP"}
_SUGGESTED_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


class ZipCheckError(UserFacingError):
    """Base error; ``user_message`` is safe to show to a user as is."""


class ZipTooLarge(ZipCheckError):
    """The upload exceeded the size limit while it was being downloaded."""


class ZipUnreadable(ZipCheckError):
    """The file to check could not be opened at all (missing, a directory, no permission)."""


@dataclass(frozen=True)
class ZipLimits:
    max_zip_bytes: int = 100 * MB
    min_images: int = 1
    max_images: int = 200
    max_total_uncompressed: int = 1024 * MB  # zip-bomb guard
    max_ratio: float = 100.0  # per entry and overall compression ratio
    max_entries: int = 2000
    min_side_warning: int = 512
    max_image_pixels: int = 64_000_000  # decompression-bomb guard for a single image
    # Each image is held in memory while Pillow inspects it, so this bounds peak memory.
    max_image_bytes: int = 50 * MB
    max_caption_bytes: int = 10 * 1024
    # Decode every image's pixels (JPEG at 1/8 scale). Catches corrupt compressed image data
    # that the structural checks cannot, at several times the cost; PNG/WebP need up to
    # width x height x 4 bytes of memory.
    decode_pixels: bool = False


@dataclass
class ZipReport:
    ok: bool
    problems: list[str]
    warnings: list[str]
    image_count: int
    caption_count: int
    total_uncompressed: int
    skipped: list[str] = field(default_factory=list)

    def message(self, *, limit: int = 1900) -> str:
        """One user-facing message: every problem, then warnings, cut to ``limit`` characters.

        When not everything fits, the last line says how many items were left out.
        """
        counts = f"{_plural(self.image_count, 'image')}, {_plural(self.caption_count, 'caption')}"
        if self.problems:
            head = "❌ This zip can't be used for training. Please fix the following and try again:"
        else:
            head = f"✅ The zip looks good ({counts})."
        items: list[tuple[str, str | None]] = [(f"• {p}", None) for p in self.problems]
        if self.warnings:
            items += [(f"• {w}", "⚠️ Notes:") for w in self.warnings]
        return _fit_lines(head, items, limit)


def _fit_lines(head: str, items: list[tuple[str, str | None]], limit: int) -> str:
    """Join ``head`` and bullet items (each optionally under a section title) within ``limit``.

    Items that do not fit are replaced by a final "…and N more" line; a single over-long item
    is shortened rather than dropped when there is reasonable room for it.
    """
    limit = max(limit, 1)
    text = head
    section: str | None = None
    for i, (line, title) in enumerate(items):
        prefix = f"\n\n{title}" if title is not None and title != section else ""
        left_after = len(items) - i - 1
        reserve = len(f"\n…and {left_after} more") if left_after else 0
        room = limit - len(text) - len(prefix) - 1 - reserve
        if len(line) > room:
            if room < 40:
                return _hard_cut(f"{text}\n…and {len(items) - i} more", limit)
            line = line[: room - 1] + "…"
        text += f"{prefix}\n{line}"
        section = title
    return _hard_cut(text, limit)


def _hard_cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1024 * MB), ("MB", MB), ("KB", 1024)):
        if n >= size:
            value = n / size
            return (
                f"{value:.0f} {unit}"
                if value >= 10 or value == int(value)
                else f"{value:.1f} {unit}"
            )
    return _plural(int(n), "byte")


def _show(name: str) -> str:
    """Render an entry name safely inside Discord inline code."""
    shown = _CONTROL_RE.sub("?", name).replace("`", "'")
    if len(shown) > _MAX_SHOWN_NAME:
        half = _MAX_SHOWN_NAME // 2 - 1
        shown = f"{shown[:half]}…{shown[-half:]}"
    return f"`{shown or '(no name)'}`"


def _list_names(names: list[str]) -> str:
    shown = ", ".join(_show(n) for n in names[:_MAX_LISTED_NAMES])
    if len(names) > _MAX_LISTED_NAMES:
        shown += f" and {len(names) - _MAX_LISTED_NAMES} more"
    return shown


# --------------------------------------------------------------------------------------------
# Byte-level checks


def _jpeg_scan_start(data: bytes | bytearray) -> int | None:
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


def _declared_entry_count(f: BinaryIO, size: int) -> int | None:
    """Entry count from the end-of-central-directory record, read before zipfile parses it.

    zipfile builds a Python object per entry, so a tiny zip declaring millions of entries could
    exhaust memory before any of our checks ran.
    """
    try:
        return _parse_entry_count(f, size)
    except Exception:
        return None


def _parse_entry_count(f: BinaryIO, size: int) -> int | None:
    tail_len = min(size, 65535 + 22)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return None
    count = struct.unpack_from("<H", tail, pos + 10)[0]
    if count != 0xFFFF:
        return count
    loc = pos - 20  # ZIP64 end-of-central-directory locator
    if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
        return None
    offset = struct.unpack_from("<Q", tail, loc + 8)[0]
    if offset + 56 > size:
        return None
    f.seek(offset)
    rec = f.read(56)
    if rec[:4] != b"PK\x06\x06":
        return None
    return struct.unpack_from("<Q", rec, 32)[0]


# --------------------------------------------------------------------------------------------
# The checker


@dataclass
class _Item:
    index: int
    info: zipfile.ZipInfo
    kind: str  # "image" | "caption"
    stem_key: str


class _StopReading(Exception):
    """The overall uncompressed-size cap was hit; no further entry is read."""


class _Checker:
    def __init__(self, limits: ZipLimits) -> None:
        self.limits = limits
        self.global_problems: list[str] = []
        self.entry_problems: list[tuple[int, str]] = []
        self.warnings: list[str] = []
        self.skipped: list[str] = []
        self.small_images: list[str] = []
        self.bytes_read = 0
        self.total_declared = 0
        self.image_count = 0
        self.caption_count = 0

    # -- reporting --

    def entry_problem(self, index: int, name: str, text: str) -> None:
        self.entry_problems.append((index, f"{_show(name)}: {text}"))

    def report(self) -> ZipReport:
        problems = self.global_problems + [p for _, p in sorted(self.entry_problems)]
        warnings = list(self.warnings)
        if self.small_images:
            n = len(self.small_images)
            side = self.limits.min_side_warning
            are = "image is" if n == 1 else "images are"
            warnings.append(
                f"{n} {are} smaller than {side} px on the short side: "
                f"{_list_names(self.small_images)}. They are accepted, but training works best "
                f"with images of at least {side} px."
            )
        return ZipReport(
            ok=not problems,
            problems=problems,
            warnings=warnings,
            image_count=self.image_count,
            caption_count=self.caption_count,
            total_uncompressed=self.total_declared,
            skipped=self.skipped,
        )

    # -- top level --

    def run(self, path: Path, declared_size: int | None) -> ZipReport:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, ZipFile borrows it
        except OSError as exc:
            raise ZipUnreadable("The uploaded file could not be opened for checking.") from exc
        with f:
            try:
                self._run(f, declared_size)
            except _StopReading:
                pass
            except ZipCheckError:
                raise
            except Exception:
                # Whatever went wrong, the user gets a report rather than a traceback.
                self.global_problems.append(
                    "The zip could not be checked completely because it is damaged."
                )
        return self.report()

    def _run(self, f: BinaryIO, declared_size: int | None) -> None:
        limits = self.limits
        try:
            actual_size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise ZipUnreadable("The uploaded file could not be opened for checking.") from exc
        if f.read(4) not in _ZIP_MAGICS:
            self._not_a_zip()
            return
        size = max(actual_size, declared_size or 0)
        if size > limits.max_zip_bytes:
            self.global_problems.append(
                f"The zip is {_fmt_bytes(size)}; the limit is {_fmt_bytes(limits.max_zip_bytes)}."
            )
        count = _declared_entry_count(f, actual_size)
        if count is not None and count > limits.max_entries:
            self._too_many_entries(count)
            return
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except Exception:
            self._not_a_zip()
            return
        with zf:
            infos = zf.infolist()
            if len(infos) > limits.max_entries:
                self._too_many_entries(len(infos))
                return
            self._check_totals(infos, actual_size)
            items, image_candidates = self._classify(infos)
            self._check_image_count(image_candidates)
            self._check_contents(zf, items)

    def _not_a_zip(self) -> None:
        self.global_problems[:] = [
            "This file is not a zip archive (or it is too damaged to open). "
            "Please upload a .zip file containing your images."
        ]

    def _too_many_entries(self, count: int) -> None:
        self.global_problems.append(
            f"The zip contains {count} files; the most allowed is {self.limits.max_entries}."
        )

    def _check_totals(self, infos: list[zipfile.ZipInfo], archive_size: int) -> None:
        limits = self.limits
        self.total_declared = sum(i.file_size for i in infos)
        total_compressed = sum(i.compress_size for i in infos)
        if self.total_declared > limits.max_total_uncompressed:
            self.global_problems.append(
                f"Unpacked, the files would take {_fmt_bytes(self.total_declared)}; the limit is "
                f"{_fmt_bytes(limits.max_total_uncompressed)}. (This can be a sign of a zip bomb.)"
            )
        if self.total_declared > _RATIO_MIN_BYTES and self.total_declared > limits.max_ratio * max(
            total_compressed, 1
        ):
            self.global_problems.append(
                "The zip's contents are compressed far more than images can be, which is how zip "
                "bombs work."
            )
        if total_compressed > archive_size:
            self.global_problems.append(
                "Several files in the zip share the same data, which is how zip bombs work."
            )

    # -- pass 1: names and metadata --

    def _classify(self, infos: list[zipfile.ZipInfo]) -> tuple[list[_Item], int]:
        items: list[_Item] = []
        seen: set[str] = set()
        image_candidates = 0
        for index, info in enumerate(infos):
            name = info.orig_filename
            problem = _path_problem(name)
            if problem is None:
                problem = self._metadata_problem(info)
            if problem is not None:
                self.entry_problem(index, name, problem)
                continue
            normalized = name.replace("\\", "/")
            if normalized.endswith("/"):
                continue  # directory entry
            if _is_junk(normalized):
                self.skipped.append(name)
                continue
            key = unicodedata.normalize("NFC", normalized).casefold()
            if key in seen:
                self.entry_problem(
                    index,
                    name,
                    "another file in the zip has the same name (names must differ by more than "
                    "upper/lower case).",
                )
                continue
            seen.add(key)
            posix = PurePosixPath(normalized)
            ext = posix.suffix.lower()
            stem_key = key[: len(key) - len(ext)] if ext else key
            if ext in IMAGE_EXTENSIONS:
                image_candidates += 1
                kind = "image"
            elif ext == CAPTION_EXTENSION:
                kind = "caption"
            elif ext in ARCHIVE_EXTENSIONS or posix.name.lower().endswith(".tar.gz"):
                self.entry_problem(index, name, _NESTED_ARCHIVE)
                continue
            else:
                what = f"{ext[1:].upper()} files are" if ext else "files without an extension are"
                self.entry_problem(
                    index,
                    name,
                    f"{what} not allowed. The zip may only contain images (JPG, PNG, WebP) and "
                    ".txt captions.",
                )
                continue
            problem = self._size_problem(info, kind)
            if problem is not None:
                self.entry_problem(index, name, problem)
                continue
            items.append(_Item(index, info, kind, stem_key))
        return items, image_candidates

    def _metadata_problem(self, info: zipfile.ZipInfo) -> str | None:
        mode = (info.external_attr >> 16) & 0o170000
        if mode == stat.S_IFLNK:
            return "links (symlinks) are not allowed; put the real file in the zip instead."
        if mode not in (0, stat.S_IFREG, stat.S_IFDIR):
            return "is a special file, not a normal file, and is not allowed."
        if info.flag_bits & 0x1:
            return "is password-protected. Please create the zip without a password."
        if info.compress_type not in _SUPPORTED_COMPRESSION:
            return _UNSUPPORTED_COMPRESSION
        if info.file_size > _RATIO_MIN_BYTES and info.file_size > self.limits.max_ratio * max(
            info.compress_size, 1
        ):
            ratio = info.file_size / max(info.compress_size, 1)
            return (
                f"shrinks {ratio:,.0f} times when compressed, which is how zip bombs work, so it "
                "was not opened."
            )
        return None

    def _size_problem(self, info: zipfile.ZipInfo, kind: str) -> str | None:
        limits = self.limits
        if kind == "image" and info.file_size > limits.max_image_bytes:
            return (
                f"is {_fmt_bytes(info.file_size)}; each image may be at most "
                f"{_fmt_bytes(limits.max_image_bytes)}."
            )
        if kind == "caption" and info.file_size > limits.max_caption_bytes:
            return (
                f"captions may be at most {_fmt_bytes(limits.max_caption_bytes)} "
                f"(this one is {info.file_size:,} bytes)."
            )
        return None

    def _check_image_count(self, n: int) -> None:
        limits = self.limits
        if n == 0 and limits.min_images > 0:
            self.global_problems.append(
                "The zip contains no images. Add at least "
                f"{_plural(limits.min_images, 'JPG, PNG or WebP image')}."
            )
        elif n < limits.min_images:
            self.global_problems.append(
                f"The zip contains {_plural(n, 'image')}; at least {limits.min_images} are needed."
            )
        elif n > limits.max_images:
            self.global_problems.append(
                f"The zip contains {n} images; the most allowed is {limits.max_images}."
            )

    # -- pass 2: contents --

    def _check_contents(self, zf: zipfile.ZipFile, items: list[_Item]) -> None:
        image_stems = {it.stem_key for it in items if it.kind == "image"}
        for item in items:
            name = item.info.orig_filename
            if item.kind == "caption" and item.stem_key not in image_stems:
                self.warnings.append(
                    f"{_show(name)}: there is no image with the same name, so this caption will "
                    "not be used."
                )
            try:
                data = self._read(zf, item)
                if data is None:
                    continue
                if item.kind == "image":
                    self._check_image(item, data)
                else:
                    self._check_caption(item, data, item.stem_key in image_stems)
            except _StopReading:
                raise
            except zipfile.BadZipFile as exc:
                detail = " (checksum mismatch)" if "CRC" in str(exc) else ""
                self.entry_problem(
                    item.index, name, f"could not be read: the zip is damaged{detail}."
                )
            except NotImplementedError:
                self.entry_problem(item.index, name, _UNSUPPORTED_COMPRESSION)
            except Exception:
                self.entry_problem(item.index, name, "could not be read (corrupt data).")

    def _read(self, zf: zipfile.ZipFile, item: _Item) -> bytes | bytearray | None:
        """Stream one entry into memory, never past its declared size or the overall cap.

        zipfile itself stops at the size recorded in the central directory and checks the CRC
        once the end is reached; the counting here does not rely on that. An entry that
        arrives in one chunk is returned as is; a bigger one is assembled in a buffer allocated
        once, so peak memory is about its size plus one chunk.
        """
        info = item.info
        size = info.file_size
        first: bytes | None = None
        buf: bytearray | None = None
        got = 0
        with zf.open(info) as f:
            # Ask for one byte past the declared end, so an overrun is seen, and no more:
            # a decompressor allocates as much output as it is allowed to produce.
            step = _CHUNK if size < _CHUNK else _BIG_ENTRY_CHUNK
            while chunk := f.read(min(step, size - got + 1)):
                end = got + len(chunk)
                self.bytes_read += len(chunk)
                if end > size:
                    self.entry_problem(
                        item.index,
                        info.orig_filename,
                        "contains more data than the zip says it does, so it was not read "
                        "further (the zip is damaged or was made to trick the checker).",
                    )
                    return None
                if self.bytes_read > self.limits.max_total_uncompressed:
                    self.global_problems.append(
                        "Checking stopped: the unpacked files went over the "
                        f"{_fmt_bytes(self.limits.max_total_uncompressed)} limit. "
                        "(This can be a sign of a zip bomb.)"
                    )
                    raise _StopReading
                if first is None and buf is None:
                    first = chunk
                else:
                    if buf is None:
                        buf = bytearray(size)
                        buf[:got] = first or b""
                        first = None
                    buf[got:end] = chunk
                got = end
        if got != size:
            raise zipfile.BadZipFile("entry shorter than declared")
        if buf is not None:
            return buf
        return first if first is not None else b""

    def _check_caption(self, item: _Item, data: bytes | bytearray, matched: bool) -> None:
        name = item.info.orig_filename
        if sniff_archive(data[:512]):
            self.entry_problem(item.index, name, _NESTED_ARCHIVE)
            return
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = None
        if text is None or "\x00" in text:
            self.entry_problem(
                item.index, name, "is not plain text. Save captions as UTF-8 text files."
            )
            return
        if matched:
            self.caption_count += 1

    def _check_image(self, item: _Item, data: bytes | bytearray) -> None:
        name = item.info.orig_filename
        ext = PurePosixPath(name.replace("\\", "/")).suffix.lower()
        expected = IMAGE_EXTENSIONS[ext]
        actual = sniff_format(data[:512])
        if actual == "archive":
            self.entry_problem(item.index, name, _NESTED_ARCHIVE)
            return
        if actual is None:
            self.entry_problem(
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
            self.entry_problem(item.index, name, text)
            return
        problem, size = self._inspect_image(data, expected)
        if problem is not None:
            self.entry_problem(item.index, name, problem)
            return
        self.image_count += 1
        if min(size) < self.limits.min_side_warning:
            self.small_images.append(name)

    def _inspect_image(
        self, data: bytes | bytearray, fmt: str
    ) -> tuple[str | None, tuple[int, int]]:
        limits = self.limits
        damaged = "is damaged or incomplete and cannot be used."
        try:
            with Image.open(_reader(data), formats=[fmt]) as im:
                width, height = im.size
                if width <= 0 or height <= 0:
                    return damaged, (0, 0)
                if width * height > limits.max_image_pixels:
                    return _too_many_pixels(width, height, limits), (width, height)
                if fmt == "PNG":
                    im.verify()  # every chunk's CRC, through IEND
            if fmt == "JPEG":
                scan = _jpeg_scan_start(data)
                if scan is None or data.rfind(b"\xff\xd9", scan) < 0:
                    return damaged, (width, height)
            elif fmt == "WEBP" and int.from_bytes(data[4:8], "little") + 8 > len(data):
                return damaged, (width, height)
            if limits.decode_pixels:
                with Image.open(_reader(data), formats=[fmt]) as im:
                    if fmt == "JPEG":
                        im.draft(None, (max(1, width // 8), max(1, height // 8)))
                    im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return _too_many_pixels(*_header_size(data, fmt), limits), (0, 0)
        except Exception:
            return damaged, (0, 0)
        return None, (width, height)


_NESTED_ARCHIVE = "archives inside the zip are not allowed; put the images directly in the zip."
_UNSUPPORTED_COMPRESSION = (
    "uses a compression method that is not supported. Please create the zip with a standard "
    "zip tool and default settings."
)


class _MemoryReader(io.RawIOBase):
    """Read-only, seekable file over a bytearray, so Pillow can parse it without a copy
    (``io.BytesIO`` would copy the whole buffer)."""

    def __init__(self, data: bytearray) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        end = (
            len(self._view) if size is None or size < 0 else min(self._pos + size, len(self._view))
        )
        start, self._pos = self._pos, max(self._pos, end)
        return bytes(self._view[start:end])

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._view.release()
        super().close()


def _reader(data: bytes | bytearray) -> BinaryIO:
    if isinstance(data, bytearray):
        return cast(BinaryIO, _MemoryReader(data))
    return io.BytesIO(data)


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


def _path_problem(name: str) -> str | None:
    """Why this entry name is unsafe to extract, if it is."""
    if "\x00" in name or _CONTROL_RE.search(name):
        return "the name contains invisible control characters, which is not allowed."
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or _DRIVE_RE.match(normalized):
        return "absolute paths are not allowed; files must be stored inside the zip's folders."
    if ".." in normalized.split("/"):
        return "paths that leave the archive are not allowed."
    return None


def _is_junk(normalized: str) -> bool:
    parts = [p.casefold() for p in normalized.split("/") if p]
    if not parts:
        return False
    base = parts[-1]
    return any(p in JUNK_DIRS for p in parts[:-1]) or base in JUNK_FILES or base.startswith("._")


# --------------------------------------------------------------------------------------------
# Public entry points


def check_zip(
    path: str | os.PathLike[str],
    limits: ZipLimits = ZipLimits(),
    *,
    declared_size: int | None = None,
) -> ZipReport:
    """Check a training zip on disk. Blocking; call it in a worker thread.

    ``declared_size`` is the size the uploader announced (e.g. the Discord attachment size);
    the larger of it and the real file size is checked against ``max_zip_bytes``.
    Raises only :class:`ZipUnreadable` (the path cannot be opened).
    """
    return _Checker(limits).run(Path(path), declared_size)


async def check_zip_async(
    path: str | os.PathLike[str],
    limits: ZipLimits = ZipLimits(),
    *,
    declared_size: int | None = None,
) -> ZipReport:
    """:func:`check_zip` in a worker thread."""
    return await asyncio.to_thread(check_zip, path, limits, declared_size=declared_size)


_WRITE_BATCH = MB


async def download_to_file(chunks: AsyncIterator[bytes], dest: Path, max_bytes: int) -> int:
    """Stream ``chunks`` into ``dest`` and return the number of bytes written.

    Raises :class:`ZipTooLarge` as soon as more than ``max_bytes`` arrive; the partial file is
    deleted then, and on any other error or cancellation too. Disk writes happen in a worker
    thread, batched, so the event loop is never blocked on I/O.
    """
    dest = Path(dest)
    total = 0
    pending: list[bytes] = []
    pending_len = 0
    f = await asyncio.to_thread(open, dest, "wb")
    try:
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                total += len(chunk)
                if total > max_bytes:
                    raise ZipTooLarge(f"The file is larger than the {_fmt_bytes(max_bytes)} limit.")
                pending.append(chunk)
                pending_len += len(chunk)
                if pending_len >= _WRITE_BATCH:
                    await asyncio.to_thread(f.write, b"".join(pending))
                    pending, pending_len = [], 0
            if pending:
                await asyncio.to_thread(f.write, b"".join(pending))
        finally:
            await asyncio.to_thread(f.close)
    except BaseException:
        with contextlib.suppress(OSError):
            await asyncio.shield(asyncio.to_thread(dest.unlink, missing_ok=True))
        raise
    return total
