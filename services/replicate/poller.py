"""One task that polls every prediction the process follows.

The poller knows Replicate only through a :class:`PredictionSource`: fetch one prediction
by id, or list a page of recent ones. Both raise the domain errors of
:mod:`services.replicate.errors`.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.replicate.errors import RateLimitedError, ReplicateServiceError, ReplicateUnavailable
from services.replicate.values import (
    TERMINAL_STATUSES,
    PredictionData,
    PredictionPage,
    parse_time,
)

log = logging.getLogger(__name__)

POLL_OUTAGE_LIMIT = 60.0
"""Seconds of failed polls in a row after which a prediction is given up as unreachable:
the job is paid for, so a short outage of Replicate must not lose its images."""
MAX_POLL_BACKOFF = 5.0
WEBHOOK_LATE = timedelta(seconds=2)
EARLY_DELIVERIES_KEPT = 256
LIST_POLL_MIN = 3
"""With this many predictions followed at once, one listing of recent predictions per
poll replaces a GET of each: a busy bot's polls stop growing with its load."""
LIST_PAGE_SIZE = 100  # Replicate's page of predictions
LIST_REQUESTS_PER_SECOND = 20.0
"""A ceiling for listing rounds: 1,200 a minute, well under Replicate's 3,000 for GETs."""


class PredictionSource(Protocol):
    """Where the poller reads predictions from."""

    async def get_prediction(self, prediction_id: str) -> PredictionData:
        """The prediction with this id (``NotFoundError`` if there is none)."""
        ...

    async def list_predictions(
        self, cursor: str | None = None, *, created_before: datetime | None = None
    ) -> PredictionPage:
        """A page of recent predictions, newest first; ``cursor`` is the previous page's
        ``next`` (None for the first page); ``created_before``: a first page of only
        those created before then."""
        ...


@dataclass(frozen=True)
class PollTiming:
    poll_interval: float
    """Seconds between two polls of a prediction (and between rounds of single GETs)."""
    list_poll_interval: float
    """Seconds between listing rounds, when enough predictions are followed to list."""
    webhook_poll_interval: float
    """Seconds between polls of a prediction whose completion is also sent by webhook."""
    outage_limit: float = POLL_OUTAGE_LIMIT
    """Seconds of failed polls in a row after which the follower hears the error."""


@dataclass(eq=False)
class Watched:
    """A prediction being followed; the poller puts each newer state (or the error that
    ends the wait) in ``updates``."""

    prediction: Any
    created_at: datetime | None
    updates: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    webhooked: bool = False
    busy: bool = False
    failures: int = 0
    outage_since: float | None = None
    next_poll: float = 0.0


class PredictionPoller:
    """One task polls every prediction the process follows, once per ``poll_interval``
    (``list_poll_interval`` while listing: one request covers all, so it can be sooner).

    With few predictions due, each is fetched by id. From ``LIST_POLL_MIN`` on, one
    listing of the newest predictions (100 a page, newest first) answers for all of them,
    so 200 jobs cost a few requests per interval instead of 200; a prediction the listing
    does not show is fetched by id. Requests run in their own tasks, so one that hangs
    holds up only the predictions it covers. Failed polls back off, and are tolerated for
    ``outage_limit`` seconds in a row before the follower hears the error."""

    def __init__(self, source: PredictionSource, timing: PollTiming) -> None:
        self._source = source
        self._timing = timing
        self._watched: dict[str, Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self._rounds: set[asyncio.Task[None]] = set()
        self._early: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._webhooks_missed = 0
        self._next_sweep = 0.0

    def watch(self, prediction: Any, *, webhooked: bool = False) -> Watched:
        watched = Watched(prediction, parse_time(prediction.created_at), webhooked=webhooked)
        if webhooked:
            watched.next_poll = time.monotonic() + self._timing.webhook_poll_interval
        self._watched[prediction.id] = watched
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="replicate-poller")
        early = self._early.pop(prediction.id, None)
        if early is not None:
            self.offer(early)
        return watched

    def keep_early(self, payload: Mapping[str, Any]) -> None:
        if payload.get("status") not in TERMINAL_STATUSES:
            return
        self._early[str(payload.get("id"))] = payload
        while len(self._early) > EARLY_DELIVERIES_KEPT:
            self._early.popitem(last=False)

    def unwatch(self, watched: Watched) -> None:
        if self._watched.get(watched.prediction.id) is watched:
            del self._watched[watched.prediction.id]

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._rounds) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while self._watched:
            await asyncio.sleep(self._interval())
            now = time.monotonic()
            due = [w for w in self._watched.values() if not w.busy and w.next_poll <= now]
            if len(due) < LIST_POLL_MIN:
                for watched in due:
                    watched.busy = True
                    self._spawn(self._get_round(watched))
            elif self._pages() == 1 or now >= self._next_sweep:
                self._next_sweep = now + self._pages() / (LIST_REQUESTS_PER_SECOND / 2)
                for watched in due:
                    watched.busy = True
                self._spawn(self._list_round(due))
            else:
                oldest = heapq.nsmallest(
                    LIST_PAGE_SIZE,
                    (w for w in due if w.created_at is not None),
                    key=_created_at,
                )
                if oldest:
                    for watched in oldest:
                        watched.busy = True
                    self._spawn(self._list_round(oldest, window=True))

    def _pages(self) -> int:
        return math.ceil(len(self._watched) / LIST_PAGE_SIZE)

    def _interval(self) -> float:
        """Seconds to the next round: listings come sooner than single polls (one request
        covers many), but never more than LIST_REQUESTS_PER_SECOND. With more than a page
        followed, half of them go to the page of the oldest predictions (those likeliest
        to end next: a burst's first images are seen at once), half to sweeps of every
        page."""
        timing, followed = self._timing, len(self._watched)
        if followed < LIST_POLL_MIN:
            return timing.poll_interval
        if self._pages() == 1:
            return max(timing.list_poll_interval, 1 / LIST_REQUESTS_PER_SECOND)
        return max(timing.list_poll_interval, 2 / LIST_REQUESTS_PER_SECOND)

    async def _window(self, batch: list[Watched]) -> dict[str, Any]:
        """One page: the predictions created up to the newest of ``batch``."""
        newest = max(_created_at(w) for w in batch)
        page = await self._source.list_predictions(
            created_before=newest + timedelta(microseconds=1)
        )
        return {p.id: p for p in page.results}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    async def _list_round(self, batch: list[Watched], *, window: bool = False) -> None:
        """A sweep of every page (a prediction it does not show is fetched by id), or with
        ``window`` the page of the oldest (one it does not show, because others created
        predictions meanwhile, waits for a sweep)."""
        try:
            found = await (self._window(batch) if window else self._list(batch))
        except BaseException as exc:
            for watched in batch:
                self._failed(watched, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for watched in batch:
            prediction = found.get(watched.prediction.id)
            if prediction is not None:
                self._update(watched, prediction)
            elif window:
                watched.busy = False
            else:
                self._spawn(self._get_round(watched))

    async def _list(self, batch: list[Watched]) -> dict[str, Any]:
        wanted = {w.prediction.id for w in batch}
        times = [w.created_at for w in batch if w.created_at is not None]
        oldest = min(times) if times else None
        found: dict[str, Any] = {}
        cursor: str | None = None
        pages = 0
        while True:
            page = await self._source.list_predictions(cursor)
            pages += 1
            for prediction in page.results:
                if prediction.id in wanted:
                    found[prediction.id] = prediction
            if len(found) == len(wanted) or not page.next or not page.results:
                break
            last = parse_time(page.results[-1].created_at)
            if oldest is None or last is None or last < oldest:
                break
            if pages > len(self._watched) // len(page.results) + 1:
                # Past every prediction followed here: others keep creating predictions,
                # so the rest is fetched by id.
                break
            cursor = page.next
        return found

    async def _get_round(self, watched: Watched) -> None:
        try:
            prediction = await self._source.get_prediction(watched.prediction.id)
        except BaseException as exc:
            self._failed(watched, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._update(watched, prediction)

    def poke(self, prediction_id: str) -> bool:
        """Poll this prediction now (another process heard that it changed); False if it
        is not followed here."""
        watched = self._watched.get(prediction_id)
        if watched is None:
            return False
        if not watched.busy:
            watched.busy = True
            self._spawn(self._get_round(watched))
        return True

    def offer(self, payload: Mapping[str, Any]) -> bool:
        watched = self._watched.get(str(payload.get("id")))
        if watched is None:
            return False
        try:
            prediction = PredictionData.of(payload)
        except ValueError as exc:
            log.warning("unusable webhook for prediction %s: %s", payload.get("id"), exc)
            return True
        busy = watched.busy
        self._update(watched, prediction, polled=False)
        watched.busy = busy
        return True

    def _update(self, watched: Watched, prediction: Any, *, polled: bool = True) -> None:
        if polled:
            watched.busy = False
        watched.failures, watched.outage_since = 0, None
        if watched.webhooked:
            watched.next_poll = time.monotonic() + self._timing.webhook_poll_interval
        if watched.prediction.status in TERMINAL_STATUSES:
            return
        if polled and watched.webhooked and prediction.status in TERMINAL_STATUSES:
            completed = parse_time(prediction.completed_at)
            if completed is not None and datetime.now(UTC) - completed > WEBHOOK_LATE:
                self._webhook_missed(prediction.id)
        if prediction.status == watched.prediction.status and (
            prediction.status not in TERMINAL_STATUSES
        ):
            return
        watched.prediction = prediction
        watched.updates.put_nowait(prediction)
        if prediction.status in TERMINAL_STATUSES:
            self.unwatch(watched)

    def _webhook_missed(self, prediction_id: str) -> None:
        self._webhooks_missed += 1
        level = logging.WARNING if self._webhooks_missed == 1 else logging.DEBUG
        log.log(
            level,
            "prediction %s finished without its webhook arriving: is PUBLIC_URL reachable "
            "from Replicate? (%d so far; such jobs are found by a poll every %.0f s)",
            prediction_id,
            self._webhooks_missed,
            self._timing.webhook_poll_interval,
        )

    def _failed(self, watched: Watched, exc: BaseException) -> None:
        """Back off after a poll that failed for a reason that may pass; end the wait for
        any other reason, or when the outage has lasted ``outage_limit``."""
        watched.busy = False
        if not isinstance(exc, Exception):
            return
        if isinstance(exc, ReplicateUnavailable | RateLimitedError):
            now = time.monotonic()
            watched.outage_since = watched.outage_since or now
            watched.failures += 1
            if now - watched.outage_since < self._timing.outage_limit:
                log.warning(
                    "poll %d of prediction %s failed: %s",
                    watched.failures,
                    watched.prediction.id,
                    exc,
                )
                backoff = self._timing.poll_interval * watched.failures
                watched.next_poll = now + min(MAX_POLL_BACKOFF, backoff)
                return
        elif not isinstance(exc, ReplicateServiceError):
            log.error("polling prediction %s failed", watched.prediction.id, exc_info=exc)
            exc = ReplicateUnavailable(f"polling failed ({type(exc).__name__})")
        watched.updates.put_nowait(exc)
        self.unwatch(watched)


def _created_at(watched: Watched) -> datetime:
    assert watched.created_at is not None
    return watched.created_at
