"""Streaming an upload to disk under a size limit, before it is checked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from services.zipcheck.errors import ZipTooLarge
from services.zipcheck.limits import MB
from services.zipcheck.report import fmt_bytes

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
                    raise ZipTooLarge(f"The file is larger than the {fmt_bytes(max_bytes)} limit.")
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
