"""Generation jobs shared by every process: admission, the queue, starts, cancel, leases.

Admission
    A request is checked against every limit (cooldown, daily quota, queue length) and, if
    it passes, its row is written, in one transaction that holds the admission lock
    (PostgreSQL: a transaction-scoped advisory lock; SQLite: the write lock that
    ``BEGIN IMMEDIATE`` takes). Whatever arrives meanwhile, in this process or another,
    waits for the lock, so a burst gets exactly what the limits allow. Requests that arrive
    together are admitted in one transaction, in order.

The queue
    Queued jobs are rows, ordered by ``seq``. At most ``max_running`` jobs run at once
    across every process: a process starts one of its own queued jobs only when it is
    among the first ``max_running - running`` of the queue, under the same lock.

Ownership
    A job belongs to the process in ``lease_owner`` while ``lease_expires_at`` is in the
    future; the owner renews its leases, and any process may take over a job whose lease
    has expired. State changes are conditional (``WHERE status = …``), so a Cancel of a
    queued job always wins over its start.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import sqlalchemy as sa

from services.store.base import Queries, advisory_lock, new_id
from services.store.columns import require_aware
from services.store.engine import shielded
from services.store.generations import to_generation
from services.store.records import (
    ACTIVE_GENERATION_STATUSES,
    GENERATION_STATUSES,
    SOURCES,
    Generation,
    NewGeneration,
)
from services.store.schema import generations_table as _gen_t
from services.store.usage import Budget, BudgetTally
from services.store.writer import WriteOp

log = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock that serialises admission and starts.
GENERATIONS_LOCK: Final = 0x47454E5F_41444D54
#: Notice topic: the queue changed (a job was admitted, started, canceled or ended).
QUEUE_TOPIC: Final = "queue"


def job_topic(gen_id: str) -> str:
    """Notice topic of one job: someone asked to cancel it."""
    return f"gen:{gen_id}"


def prediction_topic(prediction_id: str) -> str:
    """Notice topic of one prediction: a webhook about it reached some process."""
    return f"prediction:{prediction_id}"


_ORDER: Final = (_gen_t.c.seq, _gen_t.c.created_at, _gen_t.c.id)


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class GenerationLimits:
    """What one request is admitted against."""

    #: Least seconds between two admitted requests of one user (0: none).
    cooldown: float = 0.0
    #: Requests a user may have admitted per UTC day (0: unlimited).
    per_day: int = 0
    #: Jobs running at once, across every process.
    max_running: int = 4
    #: Jobs waiting behind the running ones; past this, requests are refused.
    max_queued: int = 20
    #: Monthly budgets the job counts against (its server's, its API key's).
    budgets: tuple[Budget, ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was not admitted, and in how many seconds it may be."""

    reason: Literal["cooldown", "quota", "busy", "budget"]
    retry_after: float
    limit: float
    #: For ``budget``: the budget that is used up.
    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    job: NewGeneration
    limits: GenerationLimits
    owner: str
    now: datetime
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class PredictionSet:
    """A job's prediction, recorded."""

    #: Whether someone asked to stop the job meanwhile.
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class QueueOrder:
    """The queue as the store sees it."""

    running: int
    #: Queued job ids, the next to start first.
    queued: tuple[str, ...]

    def position(self, gen_id: str) -> int | None:
        """1 for the next job to start; None if the job is not queued."""
        try:
            return self.queued.index(gen_id) + 1
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class CancelResult:
    #: "canceled" (it was queued), "requested" (it runs: its owner stops it), or "finished".
    outcome: Literal["canceled", "requested", "finished", "missing"]
    generation: Generation | None


def _admit(conn: sa.Connection, requests: Sequence[AdmitRequest]) -> list[Generation | Refusal]:
    advisory_lock(conn, GENERATIONS_LOCK)
    status = _gen_t.c.status
    running, queued, last_seq = conn.execute(
        sa.select(
            sa.func.count().filter(status == "running"),
            sa.func.count().filter(status == "queued"),
            sa.func.max(_gen_t.c.seq),
        ).where(status.in_(ACTIVE_GENERATION_STATUSES))
    ).one()
    # seq orders queued jobs only, so it may start again at 1 whenever nothing is active.
    seq = int(last_seq or 0)
    running, queued = int(running), int(queued)
    since = min(
        min(day_start(r.now) for r in requests),
        min(r.now - timedelta(seconds=r.limits.cooldown) for r in requests),
    )
    first_day = min(day_start(r.now) for r in requests)
    used: dict[str, int] = {}
    last: dict[str, datetime] = {}
    rows = conn.execute(
        sa.select(
            _gen_t.c.user_key,
            sa.func.count().filter(_gen_t.c.created_at >= first_day),
            sa.func.max(_gen_t.c.created_at),
        )
        .where(
            _gen_t.c.user_key.in_({r.job.user_key for r in requests}),
            _gen_t.c.created_at >= since,
        )
        .group_by(_gen_t.c.user_key)
    )
    for user_key, count, newest in rows:
        used[user_key] = int(count)
        if newest is not None:
            last[user_key] = newest
    results: list[Generation | Refusal] = []
    inserts: list[dict[str, Any]] = []
    tally = BudgetTally(conn)
    for request in requests:
        job, limits, now = request.job, request.limits, request.now
        key = job.user_key
        previous = last.get(key)
        if limits.cooldown and previous is not None:
            # At most the cooldown: clocks of processes on other machines may disagree.
            wait = min(limits.cooldown, limits.cooldown - (now - previous).total_seconds())
            if wait > 0:
                results.append(Refusal("cooldown", wait, limits.cooldown))
                continue
        if limits.per_day and used.get(key, 0) >= limits.per_day:
            reset = day_start(now) + timedelta(days=1)
            results.append(Refusal("quota", (reset - now).total_seconds(), limits.per_day))
            continue
        spent = tally.exceeded(limits.budgets)
        if spent is not None:
            wait = (spent.until - now).total_seconds()
            results.append(Refusal("budget", wait, spent.limit, spent))
            continue
        if running + queued >= limits.max_running + limits.max_queued:
            results.append(Refusal("busy", 60.0, limits.max_queued))
            continue
        seq += 1
        queued += 1
        used[key] = used.get(key, 0) + 1
        last[key] = now
        tally.add(limits.budgets, job.cost_reserved)
        values = _row_values(job, now) | {
            "id": job.id or new_id(),
            "seq": seq,
            "lease_owner": request.owner,
            "lease_expires_at": request.lease_until,
        }
        inserts.append(values)
        results.append(_record(values))
    if inserts:
        conn.execute(sa.insert(_gen_t), inserts)
    return results


def _row_values(job: NewGeneration, now: datetime) -> dict[str, Any]:
    return {
        "user_key": job.user_key,
        "user_id": job.user_id,
        "guild_id": job.guild_id,
        "channel_id": job.channel_id,
        "prompt": job.prompt,
        "model": job.model,
        "params": dict(job.params),
        "status": job.status,
        "created_at": job.created_at or now,
        "updated_at": now,
        "interaction_id": job.interaction_id,
        "source": job.source,
        "cost_reserved": job.cost_reserved,
    }


def _record(values: dict[str, Any]) -> Generation:
    defaults = {c.name: None for c in _gen_t.columns}
    return Generation(**(defaults | values))


def _claim(
    conn: sa.Connection, owner: str, max_running: int, now: datetime, lease_until: datetime
) -> list[Generation]:
    advisory_lock(conn, GENERATIONS_LOCK)
    running = conn.scalar(
        sa.select(sa.func.count()).select_from(_gen_t).where(_gen_t.c.status == "running")
    )
    free = max_running - int(running or 0)
    if free <= 0:
        return []
    head = conn.execute(
        sa.select(_gen_t.c.id, _gen_t.c.lease_owner)
        .where(_gen_t.c.status == "queued")
        .order_by(*_ORDER)
        .limit(free)
    ).all()
    mine = [gen_id for gen_id, lease_owner in head if lease_owner == owner]
    if not mine:
        return []
    rows = conn.execute(
        sa.update(_gen_t)
        .where(_gen_t.c.id.in_(mine), _gen_t.c.status == "queued")
        .values(status="running", started_at=now, updated_at=now, lease_expires_at=lease_until)
        .returning(*_gen_t.c)
    ).all()
    return sorted((to_generation(r) for r in rows), key=lambda g: (g.seq or 0, g.id))


def _cancel(conn: sa.Connection, gen_id: str, now: datetime, error: str) -> CancelResult:
    row = conn.execute(
        sa.update(_gen_t)
        .where(_gen_t.c.id == gen_id, _gen_t.c.status == "queued")
        .values(status="canceled", error=error, finished_at=now, updated_at=now)
        .returning(*_gen_t.c)
    ).first()
    if row is not None:
        return CancelResult("canceled", to_generation(row))
    row = conn.execute(
        sa.update(_gen_t)
        .where(_gen_t.c.id == gen_id, _gen_t.c.status == "running")
        .values(cancel_requested_at=sa.func.coalesce(_gen_t.c.cancel_requested_at, now))
        .returning(*_gen_t.c)
    ).first()
    if row is not None:
        return CancelResult("requested", to_generation(row))
    row = conn.execute(sa.select(_gen_t).where(_gen_t.c.id == gen_id)).first()
    return CancelResult("finished" if row else "missing", to_generation(row) if row else None)


def _take_over(
    conn: sa.Connection,
    owner: str,
    now: datetime,
    lease_until: datetime,
    sources: Sequence[str],
    limit: int,
) -> list[Generation]:
    expired = sa.or_(_gen_t.c.lease_expires_at.is_(None), _gen_t.c.lease_expires_at < now)
    candidates = (
        sa.select(_gen_t.c.id)
        .where(_gen_t.c.status.in_(ACTIVE_GENERATION_STATUSES), expired)
        .where(_gen_t.c.source.in_(list(sources)))
        .order_by(*_ORDER)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(conn.scalars(candidates))
    if not ids:
        return []
    rows = conn.execute(
        sa.update(_gen_t)
        .where(_gen_t.c.id.in_(ids), _gen_t.c.status.in_(ACTIVE_GENERATION_STATUSES), expired)
        .values(lease_owner=owner, lease_expires_at=lease_until, updated_at=now)
        .returning(*_gen_t.c)
    ).all()
    return sorted((to_generation(r) for r in rows), key=lambda g: (g.seq or 0, g.id))


@functools.cache
def _finish_stmt(statuses: int, by_owner: bool) -> Any:
    """The end of a job still in one of ``statuses`` statuses (bound as ``_from0``...),
    with ``by_owner`` still leased to ``_owner``; the columns set are the other
    parameters. Built once per shape, so SQLAlchemy's compiled cache is hit without a
    statement built per call."""
    cond = [
        _gen_t.c.id == sa.bindparam("_row_id"),
        sa.or_(*(_gen_t.c.status == sa.bindparam(f"_from{i}") for i in range(statuses))),
    ]
    if by_owner:
        cond.append(_gen_t.c.lease_owner == sa.bindparam("_owner"))
    return sa.update(_gen_t).where(*cond).returning(*_gen_t.c)


_SET_PREDICTION: Final = (
    sa.update(_gen_t)
    .where(
        _gen_t.c.id == sa.bindparam("_row_id"),
        _gen_t.c.status == "running",
        _gen_t.c.lease_owner == sa.bindparam("_owner"),
    )
    .returning(_gen_t.c.cancel_requested_at)
)


class JobQueries(Queries):
    """Admission, starts, cancel and leases of generation jobs (see the module's doc)."""

    #: Set by the facade: called with each job this process ends (see on_generation_end).
    _end_hooks: list[Callable[[Generation], None]]

    def on_generation_end(self, callback: Callable[[Generation], None]) -> Callable[[], None]:
        """Call ``callback(job)`` with every job this process ends (finished, failed or
        canceled), as stored: each job ends once, in one process. Returns the function
        that stops it; callbacks run on the event loop and must not block."""
        self._end_hooks.append(callback)

        def stop() -> None:
            if callback in self._end_hooks:
                self._end_hooks.remove(callback)

        return stop

    def _ended(self, job: Generation) -> None:
        for callback in list(self._end_hooks):
            try:
                callback(job)
            except Exception:
                log.exception("job end callback failed for %s", job.id)

    @shielded
    async def admit_generations(
        self, requests: Sequence[AdmitRequest]
    ) -> list[Generation | Refusal]:
        """Admit each request or say why not, in order, as one atomic step."""
        for request in requests:
            job = request.job
            if job.status != "queued":
                raise ValueError("admitted jobs start queued")
            if job.source not in SOURCES:
                raise ValueError(f"invalid source {job.source!r}")
            require_aware(now=request.now, lease_until=request.lease_until)
        results = await self._db.transact(lambda conn: _admit(conn, list(requests)))
        if any(isinstance(r, Generation) for r in results):
            self.events.publish(QUEUE_TOPIC)
        return results

    @shielded
    async def claim_starts(
        self, owner: str, max_running: int, now: datetime, lease_until: datetime
    ) -> list[Generation]:
        """Mark as running those of ``owner``'s queued jobs that are next in line while
        fewer than ``max_running`` jobs run; returns them in queue order."""
        require_aware(now=now, lease_until=lease_until)
        started = await self._db.transact(
            lambda conn: _claim(conn, owner, max_running, now, lease_until)
        )
        if started:
            self.events.publish(QUEUE_TOPIC)
        return started

    @shielded
    async def queue_order(self) -> QueueOrder:
        async with self._db.tx() as conn:
            running = await conn.scalar(
                sa.select(sa.func.count()).select_from(_gen_t).where(_gen_t.c.status == "running")
            )
            queued = await conn.scalars(
                sa.select(_gen_t.c.id).where(_gen_t.c.status == "queued").order_by(*_ORDER)
            )
            return QueueOrder(int(running or 0), tuple(queued))

    @shielded
    async def cancel_generation(self, gen_id: str, now: datetime, error: str) -> CancelResult:
        """Cancel a queued job at once, or ask the process running it to stop it."""
        require_aware(now=now)
        result = await self._db.transact(lambda conn: _cancel(conn, gen_id, now, error))
        if result.outcome in ("canceled", "requested"):
            self.events.publish(job_topic(gen_id))
            if result.outcome == "canceled":
                self.events.publish(QUEUE_TOPIC)
                assert result.generation is not None
                self._ended(result.generation)
        return result

    @shielded
    async def finish_generation(
        self,
        gen_id: str,
        status: str,
        *,
        finished_at: datetime,
        owner: str | None = None,
        from_status: Sequence[str] = ("running",),
        **values: Any,
    ) -> Generation | None:
        """Record the end of a job still in one of ``from_status`` (and, with ``owner``,
        still leased to it); None if not: it ended meanwhile, or another process took it
        over. A job ends exactly once, and only whoever ended it posts its result."""
        if status not in GENERATION_STATUSES:
            raise ValueError(f"invalid generation status {status!r}")
        require_aware(finished_at=finished_at, **values)
        stmt = _finish_stmt(len(from_status), owner is not None)
        params = {
            **values,
            "status": status,
            "finished_at": finished_at,
            "updated_at": finished_at,
            "_row_id": gen_id,
            **{f"_from{i}": value for i, value in enumerate(from_status)},
        }
        if owner is not None:
            params["_owner"] = owner
        row = await self._db.transact(lambda conn: conn.execute(stmt, params).first())
        if row is None:
            return None
        self.events.publish(QUEUE_TOPIC)
        ended = to_generation(row)
        self._ended(ended)
        return ended

    @shielded
    async def set_prediction(
        self, gen_id: str, prediction_id: str, owner: str
    ) -> PredictionSet | None:
        """Record the prediction of a running job this process owns; None if the job is
        no longer running here."""
        params = {"prediction_id": prediction_id, "_row_id": gen_id, "_owner": owner}
        row = await self._db.write(WriteOp(_SET_PREDICTION, params, "first"))
        return PredictionSet(cancel_requested=row[0] is not None) if row is not None else None

    @shielded
    async def renew_leases(self, owner: str, until: datetime) -> int:
        """Extend every lease ``owner`` holds; returns how many jobs it holds."""
        require_aware(until=until)
        stmt = (
            sa.update(_gen_t)
            .where(
                _gen_t.c.lease_owner == owner,
                _gen_t.c.status.in_(ACTIVE_GENERATION_STATUSES),
            )
            .values(lease_expires_at=until)
        )
        return int(await self._db.transact(lambda conn: conn.execute(stmt).rowcount))

    @shielded
    async def release_leases(self, owner: str, now: datetime, ids: Sequence[str] = ()) -> int:
        """Hand ``owner``'s jobs back (all, or those in ``ids``): any process may take
        them over at once."""
        require_aware(now=now)
        stmt = sa.update(_gen_t).where(
            _gen_t.c.lease_owner == owner, _gen_t.c.status.in_(ACTIVE_GENERATION_STATUSES)
        )
        if ids:
            stmt = stmt.where(_gen_t.c.id.in_(list(ids)))
        stmt = stmt.values(lease_expires_at=now - timedelta(microseconds=1))
        return int(await self._db.transact(lambda conn: conn.execute(stmt).rowcount))

    @shielded
    async def expire_leases_of(self, owners: Sequence[str], now: datetime) -> int:
        """Leases of processes known to be gone end now."""
        if not owners:
            return 0
        require_aware(now=now)
        stmt = (
            sa.update(_gen_t)
            .where(
                _gen_t.c.lease_owner.in_(list(owners)),
                _gen_t.c.status.in_(ACTIVE_GENERATION_STATUSES),
            )
            .values(lease_expires_at=now - timedelta(microseconds=1))
        )
        return int(await self._db.transact(lambda conn: conn.execute(stmt).rowcount))

    @shielded
    async def take_over_generations(
        self,
        owner: str,
        now: datetime,
        lease_until: datetime,
        *,
        sources: Sequence[str] = ("discord", "api"),
        limit: int = 100,
    ) -> list[Generation]:
        """Claim unfinished jobs whose lease has expired (their process is gone)."""
        require_aware(now=now, lease_until=lease_until)
        return await self._db.transact(
            lambda conn: _take_over(conn, owner, now, lease_until, sources, limit)
        )


__all__ = [
    "QUEUE_TOPIC",
    "AdmitRequest",
    "CancelResult",
    "GenerationLimits",
    "JobQueries",
    "QueueOrder",
    "Refusal",
    "advisory_lock",
    "day_start",
    "job_topic",
    "prediction_topic",
]
