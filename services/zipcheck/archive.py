"""The zip as a whole, and the first pass over its entries' names and metadata.

The checker never extracts anything and never writes to disk. It reads the central
directory, judges every entry by name and metadata, then hands the images and captions
to :class:`~services.zipcheck.entries.EntryChecker`. Only :class:`ZipCheckError` escapes
:func:`check_zip`, and only when the file itself cannot be opened.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import struct
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from services.zipcheck.entries import IMAGE_EXTENSIONS, EntryChecker, Item
from services.zipcheck.errors import ZipCheckError, ZipUnreadable
from services.zipcheck.limits import MB, ZipLimits
from services.zipcheck.reader import StopReading
from services.zipcheck.report import (
    CONTROL_RE,
    NESTED_ARCHIVE,
    UNSUPPORTED_COMPRESSION,
    Findings,
    ZipReport,
    fmt_bytes,
    plural,
)

CAPTION_EXTENSION = ".txt"
ARCHIVE_EXTENSIONS = frozenset(
    {".zip", ".zipx", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".tbz2", ".xz", ".txz", ".zst"}
)
JUNK_DIRS = frozenset({"__macosx", ".trashes", ".fseventsd", ".spotlight-v100"})
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})

# Compression ratios are only meaningful for entries big enough to matter: a 2 KB caption made
# of one repeated word legitimately compresses 100:1.
_RATIO_MIN_BYTES = MB
_SUPPORTED_COMPRESSION = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
DEFAULT_LIMITS = ZipLimits()


class ArchiveChecker:
    """One check of one zip: the archive-level limits, then the first pass over the
    entries (names, metadata, counts), then the second (their bytes)."""

    def __init__(self, limits: ZipLimits) -> None:
        self.limits = limits
        self.findings = Findings(limits)

    def run(self, path: Path, declared_size: int | None) -> ZipReport:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, ZipFile borrows it
        except OSError as exc:
            raise ZipUnreadable("The uploaded file could not be opened for checking.") from exc
        with f:
            try:
                self._run(f, declared_size)
            except StopReading:
                pass
            except ZipCheckError:
                raise
            except Exception:
                # Whatever went wrong, the user gets a report rather than a traceback.
                self.findings.global_problems.append(
                    "The zip could not be checked completely because it is damaged."
                )
        return self.findings.report()

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
            self.findings.global_problems.append(
                f"The zip is {fmt_bytes(size)}; the limit is {fmt_bytes(limits.max_zip_bytes)}."
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
            items, image_candidates = self.classify(infos)
            self._check_image_count(image_candidates)
            EntryChecker(self.findings).check_contents(zf, items)

    def _not_a_zip(self) -> None:
        self.findings.global_problems[:] = [
            "This file is not a zip archive (or it is too damaged to open). "
            "Please upload a .zip file containing your images."
        ]

    def _too_many_entries(self, count: int) -> None:
        self.findings.global_problems.append(
            f"The zip contains {count} files; the most allowed is {self.limits.max_entries}."
        )

    def _check_totals(self, infos: list[zipfile.ZipInfo], archive_size: int) -> None:
        limits, findings = self.limits, self.findings
        findings.total_declared = total = sum(i.file_size for i in infos)
        total_compressed = sum(i.compress_size for i in infos)
        if total > limits.max_total_uncompressed:
            findings.global_problems.append(
                f"Unpacked, the files would take {fmt_bytes(total)}; the limit is "
                f"{fmt_bytes(limits.max_total_uncompressed)}. (This can be a sign of a zip bomb.)"
            )
        if total > _RATIO_MIN_BYTES and total > limits.max_ratio * max(total_compressed, 1):
            findings.global_problems.append(
                "The zip's contents are compressed far more than images can be, which is how zip "
                "bombs work."
            )
        if total_compressed > archive_size:
            findings.global_problems.append(
                "Several files in the zip share the same data, which is how zip bombs work."
            )

    # -- pass 1: names and metadata --

    def classify(self, infos: list[zipfile.ZipInfo]) -> tuple[list[Item], int]:
        """The entries to read (images and captions that passed), and how many images
        there are; every other entry is skipped as junk or told as a problem."""
        findings = self.findings
        items: list[Item] = []
        seen: set[str] = set()
        image_candidates = 0
        for index, info in enumerate(infos):
            name = info.orig_filename
            problem = _path_problem(name)
            if problem is None:
                problem = self._metadata_problem(info)
            if problem is not None:
                findings.entry_problem(index, name, problem)
                continue
            normalized = name.replace("\\", "/")
            if normalized.endswith("/"):
                continue  # directory entry
            if _is_junk(normalized):
                findings.skipped.append(name)
                continue
            key = unicodedata.normalize("NFC", normalized).casefold()
            if key in seen:
                findings.entry_problem(
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
                findings.entry_problem(index, name, NESTED_ARCHIVE)
                continue
            else:
                what = f"{ext[1:].upper()} files are" if ext else "files without an extension are"
                findings.entry_problem(
                    index,
                    name,
                    f"{what} not allowed. The zip may only contain images (JPG, PNG, WebP) and "
                    ".txt captions.",
                )
                continue
            problem = self._size_problem(info, kind)
            if problem is not None:
                findings.entry_problem(index, name, problem)
                continue
            items.append(Item(index, info, kind, stem_key))
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
            return UNSUPPORTED_COMPRESSION
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
                f"is {fmt_bytes(info.file_size)}; each image may be at most "
                f"{fmt_bytes(limits.max_image_bytes)}."
            )
        if kind == "caption" and info.file_size > limits.max_caption_bytes:
            return (
                f"captions may be at most {fmt_bytes(limits.max_caption_bytes)} "
                f"(this one is {info.file_size:,} bytes)."
            )
        return None

    def _check_image_count(self, n: int) -> None:
        limits, problems = self.limits, self.findings.global_problems
        if n == 0 and limits.min_images > 0:
            problems.append(
                "The zip contains no images. Add at least "
                f"{plural(limits.min_images, 'JPG, PNG or WebP image')}."
            )
        elif n < limits.min_images:
            problems.append(
                f"The zip contains {plural(n, 'image')}; at least {limits.min_images} are needed."
            )
        elif n > limits.max_images:
            problems.append(
                f"The zip contains {n} images; the most allowed is {limits.max_images}."
            )


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


def _path_problem(name: str) -> str | None:
    """Why this entry name is unsafe to extract, if it is."""
    if "\x00" in name or CONTROL_RE.search(name):
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


def check_zip(
    path: str | os.PathLike[str],
    limits: ZipLimits = DEFAULT_LIMITS,
    *,
    declared_size: int | None = None,
) -> ZipReport:
    """Check a training zip on disk. Blocking; call it in a worker thread.

    ``declared_size`` is the size the uploader announced (e.g. the Discord attachment size);
    the larger of it and the real file size is checked against ``max_zip_bytes``.
    Raises only :class:`ZipUnreadable` (the path cannot be opened).
    """
    return ArchiveChecker(limits).run(Path(path), declared_size)


async def check_zip_async(
    path: str | os.PathLike[str],
    limits: ZipLimits = DEFAULT_LIMITS,
    *,
    declared_size: int | None = None,
) -> ZipReport:
    """:func:`check_zip` in a worker thread."""
    return await asyncio.to_thread(check_zip, path, limits, declared_size=declared_size)
