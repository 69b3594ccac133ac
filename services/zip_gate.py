"""At most ``MAX_CONCURRENT_ZIP_CHECKS`` training-zip checks at once, per process.

A check holds one entry of the zip in memory at a time (up to
``ZipLimits.max_image_bytes``), so checks that run side by side add up: ten zips sent at
once would need ten times the memory of one. Past the bound, checks wait their turn,
first come first served, and the front ends say so ("N ahead" on Discord; a 503 with
``Retry-After`` on the HTTP API when the wait would be long). The bound is per process:
processes that share one store each have their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

#: Seconds one check is expected to take until some have been timed.
FIRST_GUESS_SECONDS = 5.0


class ZipCheckGate:
    """An :class:`asyncio.Semaphore` that also counts who waits, and times the checks
    (a moving average) to tell how long a newcomer would wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting = 0
        self.typical_seconds = FIRST_GUESS_SECONDS
        self._slots = asyncio.Semaphore(limit)

    def ahead(self) -> int:
        """How many checks a newcomer would have ahead of it (0: it starts at once)."""
        if self.running < self.limit and not self.waiting:
            return 0
        return self.running + self.waiting

    def expected_wait(self) -> float:
        """Seconds a newcomer would wait for its turn, roughly (0: none)."""
        if not self.ahead():
            return 0.0
        rounds = self.waiting // self.limit + 1
        return rounds * self.typical_seconds

    @asynccontextmanager
    async def turn(
        self, on_wait: Callable[[int], Awaitable[None]] | None = None
    ) -> AsyncIterator[None]:
        """Hold one of the slots for the body; ``on_wait(ahead)`` is awaited first when
        the check has to wait."""
        ahead = self.ahead()
        self.waiting += 1
        try:
            if ahead and on_wait is not None:
                await on_wait(ahead)
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            took = time.monotonic() - started
            self.typical_seconds = 0.7 * self.typical_seconds + 0.3 * took
