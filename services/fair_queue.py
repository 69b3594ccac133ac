"""The queue in front of this process's generation slots (``MAX_CONCURRENT_GENERATIONS``)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from services.tasks import spawn

PositionWatcher = Callable[[int, int], Awaitable[None]]
"""Told ``(position, queue length)`` whenever a waiting job's place changes."""


class FairQueue:
    """A FIFO of waiting jobs in front of a fixed number of slots.

    Positions are observable, a waiter can leave (cancel) at any time, and a freed slot
    always goes to the job that has waited longest."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.running = 0
        self._waiters: collections.OrderedDict[str, asyncio.Future[None]] = (
            collections.OrderedDict()
        )
        self._watchers: dict[str, PositionWatcher] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, key: str, on_position: PositionWatcher) -> None:
        if self.running < self.slots and not self._waiters:
            self.running += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        self._watchers[key] = on_position
        self._announce()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release_slot()
            raise
        finally:
            self._waiters.pop(key, None)
            self._watchers.pop(key, None)
            self._announce()

    def leave(self, key: str) -> bool:
        """Take a waiting job out of the queue; False if it is not waiting."""
        future = self._waiters.pop(key, None)
        self._watchers.pop(key, None)
        if future is None:
            return False
        if not future.done():
            future.cancel()
        self._announce()
        return True

    def release(self) -> None:
        self._release_slot()

    def _release_slot(self) -> None:
        self.running -= 1
        while self._waiters and self.running < self.slots:
            key, future = self._waiters.popitem(last=False)
            self._watchers.pop(key, None)
            if not future.done():
                self.running += 1
                future.set_result(None)
        self._announce()

    def _announce(self) -> None:
        total = self.waiting
        for index, (key, watcher) in enumerate(list(self._watchers.items())):
            spawn(watcher(index + 1, total), name=f"queue-position-{key}")
