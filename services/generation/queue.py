"""This process's place in the queue that lives in the store.

Jobs wait here until the store lets them start (:meth:`Store.claim_starts`): one task
asks for every waiting job of this process at once, whenever the queue changes anywhere
(a notice from the store) and on a timer in case a notice was lost. The positions shown
to users come from the store too, refreshed at most every ``POSITION_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from services.generation.jobs import JobStopped
from services.ownership import LeaseKeeper
from services.store import Generation, Store
from services.store.events import EVERYTHING
from services.store.jobs import QUEUE_TOPIC
from services.tasks import spawn

log = logging.getLogger(__name__)

PositionWatcher = Callable[[int, int], Awaitable[None]]
"""Told ``(position, queue length)`` whenever a waiting job's place changes."""

#: Look at the queue at least this often, even if no notice came.
POLL_INTERVAL: Final = 1.0
#: Refresh the positions shown to users at most this often.
POSITION_INTERVAL: Final = 1.0
#: How long a job the store started before its runner asked for it is kept for it.
EARLY_GRACE: Final = 30.0


@dataclass
class _Waiter:
    future: asyncio.Future[Generation]
    on_position: PositionWatcher
    shown: tuple[int, int] | None = None


class StoreQueue:
    def __init__(self, store: Store, keeper: LeaseKeeper, max_running: int) -> None:
        self.store = store
        self.keeper = keeper
        self.max_running = max_running
        self._waiting: dict[str, _Waiter] = {}
        #: Jobs of this process the store started before their runner came to wait
        #: (admitted, then started by a round for other waiters): with when.
        self._early: dict[str, tuple[Generation, float]] = {}
        self._wake = asyncio.Event()
        self._positions_due = True
        self._last_positions = 0.0
        #: Waiting jobs someone acted on (a Cancel): looked at in the next round.
        self._check_now: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = store.events.subscribe(self._on_notice)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _on_notice(self, topic: str) -> None:
        if topic.startswith("gen:") and topic[4:] in self._waiting:
            self._check_now.add(topic[4:])
        elif topic not in (QUEUE_TOPIC, EVERYTHING):
            return
        self._positions_due = True
        if self._waiting:
            self._wake.set()

    async def wait_turn(self, generation: Generation, on_position: PositionWatcher) -> Generation:
        """Wait until the store starts the job; returns it as started (running).

        Raises :class:`JobStopped` if it was canceled (or taken elsewhere) meanwhile."""
        early = self._early.pop(generation.id, None)
        if early is not None:
            return early[0]
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        self._waiting[generation.id] = _Waiter(future, on_position)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = spawn(self._run(), name="generation-queue")
        try:
            return await future
        finally:
            self._waiting.pop(generation.id, None)

    def leave(self, gen_id: str) -> bool:
        """Stop waiting here for a job (the process is stopping); False if not waiting."""
        waiter = self._waiting.pop(gen_id, None)
        if waiter is None:
            return False
        if not waiter.future.done():
            waiter.future.cancel()
        return True

    def close(self) -> None:
        self._unsubscribe()
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while self._waiting or self._early:
            try:
                await self._round()
            except Exception:
                log.exception("could not read the generation queue; retrying")
            if not self._waiting and not self._early:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=POLL_INTERVAL)

    async def _round(self) -> None:
        now = datetime.now(UTC)
        started = await self.store.claim_starts(
            self.keeper.owner, self.max_running, now, self.keeper.lease_until(now)
        )
        for job in started:
            waiter = self._waiting.pop(job.id, None)
            if waiter is not None and not waiter.future.done():
                waiter.future.set_result(job)
            elif waiter is None:
                self._early[job.id] = (job, time.monotonic())
        stale = [
            gen_id
            for gen_id, (_, since) in self._early.items()
            if time.monotonic() - since > EARLY_GRACE
        ]
        if stale:
            # Nobody came to run them (their caller went away): hand them back.
            for gen_id in stale:
                del self._early[gen_id]
            await self.store.release_leases(self.keeper.owner, now, stale)
        checks, self._check_now = self._check_now, set()
        for gen_id in checks:
            waiter = self._waiting.get(gen_id)
            if waiter is not None:
                await self._not_queued(gen_id, waiter)
        due = self._positions_due or time.monotonic() - self._last_positions > 5 * POLL_INTERVAL
        if self._waiting and due and time.monotonic() - self._last_positions >= POSITION_INTERVAL:
            self._positions_due = False
            self._last_positions = time.monotonic()
            await self._show_positions()

    async def _show_positions(self) -> None:
        order = await self.store.queue_order()
        total = len(order.queued)
        for gen_id, waiter in list(self._waiting.items()):
            position = order.position(gen_id)
            if position is None:
                await self._not_queued(gen_id, waiter)
                continue
            if waiter.shown != (position, total):
                waiter.shown = (position, total)
                await waiter.on_position(position, total)

    async def _not_queued(self, gen_id: str, waiter: _Waiter) -> None:
        """A waiting job the queue may no longer list: canceled, taken over by another
        process, or started by a claim whose answer was lost."""
        job = await self.store.get_generation(gen_id)
        if job is not None and job.status == "running" and job.lease_owner == self.keeper.owner:
            if not waiter.future.done():
                waiter.future.set_result(job)
            return
        if job is not None and job.status == "queued":
            return  # admitted after the order was read
        if not waiter.future.done():
            waiter.future.set_exception(JobStopped(job))
