"""Reading entries into memory: bounded, counted, and without copies.

An entry is streamed through ``zipfile`` (which checks its CRC once the end is reached)
and never past its declared size or the overall cap on unpacked bytes. Pillow then reads
the bytes through :class:`MemoryReader`, which does not copy them.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any, BinaryIO, cast

from services.zipcheck.limits import MB
from services.zipcheck.report import Findings, fmt_bytes

# Entries below CHUNK are read in one go and used without a copy; bigger ones are copied
# into one buffer in BIG_ENTRY_CHUNK pieces, so peak memory stays near the entry's size.
CHUNK = 8 * MB
BIG_ENTRY_CHUNK = MB


class StopReading(Exception):
    """The overall uncompressed-size cap was hit; no further entry is read."""


class EntryReader:
    """Reads the entries of one zip, counting every byte against
    ``limits.max_total_uncompressed``; what goes wrong is told to ``findings``."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.bytes_read = 0

    def read(
        self, zf: zipfile.ZipFile, index: int, info: zipfile.ZipInfo
    ) -> bytes | bytearray | None:
        """Stream one entry into memory, never past its declared size or the overall cap.

        zipfile itself stops at the size recorded in the central directory and checks the CRC
        once the end is reached; the counting here does not rely on that. An entry that
        arrives in one chunk is returned as is; a bigger one is assembled in a buffer allocated
        once, so peak memory is about its size plus one chunk. None when the entry holds
        more than it declares (told as a problem); :class:`StopReading` past the cap.
        """
        findings = self.findings
        cap = findings.limits.max_total_uncompressed
        size = info.file_size
        first: bytes | None = None
        buf: bytearray | None = None
        got = 0
        with zf.open(info) as f:
            # Ask for one byte past the declared end, so an overrun is seen, and no more:
            # a decompressor allocates as much output as it is allowed to produce.
            step = CHUNK if size < CHUNK else BIG_ENTRY_CHUNK
            while chunk := f.read(min(step, size - got + 1)):
                end = got + len(chunk)
                self.bytes_read += len(chunk)
                if end > size:
                    findings.entry_problem(
                        index,
                        info.orig_filename,
                        "contains more data than the zip says it does, so it was not read "
                        "further (the zip is damaged or was made to trick the checker).",
                    )
                    return None
                if self.bytes_read > cap:
                    findings.global_problems.append(
                        "Checking stopped: the unpacked files went over the "
                        f"{fmt_bytes(cap)} limit. "
                        "(This can be a sign of a zip bomb.)"
                    )
                    raise StopReading
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


class MemoryReader(io.RawIOBase):
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


def as_file(data: bytes | bytearray) -> BinaryIO:
    """A file over ``data`` that does not copy it."""
    if isinstance(data, bytearray):
        return cast(BinaryIO, MemoryReader(data))
    return io.BytesIO(data)
