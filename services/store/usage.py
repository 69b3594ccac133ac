"""What jobs cost and who used what: budgets (checked inside admission), usage per day
and per user, and budget notices sent once.

A job's cost is ``cost_usd`` once it has ended; while it waits or runs, the estimate
written when it was admitted (``cost_reserved``) stands in for it. Budgets count both,
so jobs admitted together cannot spend past a budget before any of them has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import sqlalchemy as sa

from services.store.base import Queries, advisory_lock
from services.store.columns import require_aware
from services.store.engine import shielded
from services.store.records import ACTIVE_GENERATION_STATUSES, ACTIVE_TRAINING_STATUSES
from services.store.schema import budget_notices_table as _notice_t
from services.store.schema import generations_table as _gen_t
from services.store.schema import trainings_table as _train_t

#: Key of the PostgreSQL advisory lock held while a budget is checked and used up, by
#: generation and training admission alike.
BUDGETS_LOCK: Final = 0x4255_4447_4554_5321

JobKind = Literal["generation", "training"]
_TABLES: Final = {"generation": _gen_t, "training": _train_t}
_ACTIVE: Final = {"generation": ACTIVE_GENERATION_STATUSES, "training": ACTIVE_TRAINING_STATUSES}


@dataclass(frozen=True, slots=True)
class Budget:
    """A monthly spending cap: of one server (``kind="guild"``, ``scope`` its id) or of
    one API key (``kind="key"``, ``scope`` its user key)."""

    kind: Literal["guild", "key"]
    scope: str
    limit: float
    #: The period counted: jobs created from ``since`` (the month's start) on.
    since: datetime
    #: When the period ends and the budget is whole again.
    until: datetime

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.scope


def _cost(kind: JobKind) -> sa.ColumnElement[float]:
    """A job's cost: what it cost once ended, its estimate while it waits or runs."""
    t = _TABLES[kind]
    reserved = sa.case(
        (t.c.status.in_(_ACTIVE[kind]), sa.func.coalesce(t.c.cost_reserved, 0.0)), else_=0.0
    )
    return sa.func.coalesce(t.c.cost_usd, reserved)


def _in_scope(kind: JobKind, budget: Budget) -> sa.ColumnElement[bool]:
    t = _TABLES[kind]
    if budget.kind == "guild":
        return t.c.guild_id == int(budget.scope)
    return t.c.user_key == budget.scope


def _spend_queries(budget: Budget) -> list[sa.Select[tuple[float]]]:
    return [
        sa.select(sa.func.coalesce(sa.func.sum(_cost(kind)), 0.0)).where(
            _in_scope(kind, budget), _TABLES[kind].c.created_at >= budget.since
        )
        for kind in ("generation", "training")
    ]


def spend(conn: sa.Connection, budget: Budget) -> float:
    """The period's estimated spend in ``budget``'s scope (inside a transaction)."""
    return sum(float(conn.scalar(query) or 0.0) for query in _spend_queries(budget))


class BudgetTally:
    """Spend per budget within one admission transaction: read once, then increased
    by each job admitted."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._spent: dict[tuple[str, str], float] = {}
        self._locked = False

    def exceeded(self, budgets: tuple[Budget, ...]) -> Budget | None:
        """The first of ``budgets`` whose spend has reached its limit."""
        for budget in budgets:
            if budget.key not in self._spent:
                if not self._locked:
                    advisory_lock(self._conn, BUDGETS_LOCK)
                    self._locked = True
                self._spent[budget.key] = spend(self._conn, budget)
            if self._spent[budget.key] >= budget.limit:
                return budget
        return None

    def add(self, budgets: tuple[Budget, ...], amount: float | None) -> None:
        for budget in budgets:
            self._spent[budget.key] = self._spent.get(budget.key, 0.0) + (amount or 0.0)


@dataclass(frozen=True, slots=True)
class DayUsage:
    """One kind of job on one UTC day (``day`` as ``YYYY-MM-DD``)."""

    day: str
    kind: JobKind
    #: Jobs that succeeded.
    jobs: int
    images: int
    gpu_seconds: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class UserUsage:
    user_id: int
    generations: int
    trainings: int
    gpu_seconds: float
    cost_usd: float


def _day(dialect: str, column: Any) -> sa.ColumnElement[str]:
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD", type_=sa.String)
    # SQLite keeps UTC times as fixed-width text: the date is its first ten characters.
    return sa.func.substr(column, 1, 10, type_=sa.String)


class UsageQueries(Queries):
    @shielded
    async def month_spend(self, budget: Budget) -> float:
        """The estimated spend counted against ``budget`` (running jobs at their estimate)."""
        require_aware(since=budget.since)
        async with self._db.tx() as conn:
            return sum([float(await conn.scalar(q) or 0.0) for q in _spend_queries(budget)])

    @shielded
    async def usage_by_day(
        self, *, since: datetime, user_key: str | None = None, guild_id: int | None = None
    ) -> list[DayUsage]:
        """Per UTC day and kind of job, from ``since`` on: of one user (``user_key``), of
        one server (``guild_id``), or of everyone."""
        require_aware(since=since)
        found: list[DayUsage] = []
        async with self._db.tx() as conn:
            for kind in ("generation", "training"):
                t = _TABLES[kind]
                day = _day(self._db.dialect, t.c.created_at).label("day")
                images = t.c.image_count if kind == "generation" else sa.literal(0)
                query = (
                    sa.select(
                        day,
                        sa.func.count().filter(t.c.status == "succeeded"),
                        sa.func.coalesce(sa.func.sum(images), 0),
                        sa.func.coalesce(sa.func.sum(t.c.predict_time), 0.0),
                        sa.func.coalesce(sa.func.sum(t.c.cost_usd), 0.0),
                    )
                    .where(t.c.created_at >= since)
                    .group_by(day)
                )
                if user_key is not None:
                    query = query.where(t.c.user_key == user_key)
                if guild_id is not None:
                    query = query.where(t.c.guild_id == guild_id)
                for row in await conn.execute(query):
                    found.append(
                        DayUsage(
                            day=str(row[0]),
                            kind=kind,
                            jobs=int(row[1] or 0),
                            images=int(row[2] or 0),
                            gpu_seconds=float(row[3] or 0.0),
                            cost_usd=float(row[4] or 0.0),
                        )
                    )
        return sorted(found, key=lambda d: (d.day, d.kind))

    @shielded
    async def top_users(self, guild_id: int, since: datetime, limit: int = 10) -> list[UserUsage]:
        """The server's users with the highest estimated cost since ``since`` (then the
        most jobs)."""
        require_aware(since=since)
        users: dict[int, dict[str, float]] = {}
        async with self._db.tx() as conn:
            for kind in ("generation", "training"):
                t = _TABLES[kind]
                query = (
                    sa.select(
                        t.c.user_id,
                        sa.func.count().filter(t.c.status == "succeeded"),
                        sa.func.coalesce(sa.func.sum(t.c.predict_time), 0.0),
                        sa.func.coalesce(sa.func.sum(t.c.cost_usd), 0.0),
                    )
                    .where(
                        t.c.guild_id == guild_id,
                        t.c.created_at >= since,
                        t.c.user_id.is_not(None),
                    )
                    .group_by(t.c.user_id)
                )
                for user_id, jobs, seconds, cost in await conn.execute(query):
                    entry = users.setdefault(int(user_id), {"g": 0, "t": 0, "s": 0.0, "c": 0.0})
                    entry["g" if kind == "generation" else "t"] += int(jobs or 0)
                    entry["s"] += float(seconds or 0.0)
                    entry["c"] += float(cost or 0.0)
        ranked = [
            UserUsage(uid, int(e["g"]), int(e["t"]), e["s"], e["c"]) for uid, e in users.items()
        ]
        ranked.sort(key=lambda u: (-u.cost_usd, -(u.generations + u.trainings), u.user_id))
        return ranked[: max(0, limit)]

    @shielded
    async def active_jobs(self) -> tuple[int, int, int]:
        """Generations queued, generations running, trainings running (every process)."""
        status = _gen_t.c.status
        async with self._db.tx() as conn:
            counts = (
                await conn.execute(
                    sa.select(
                        sa.func.count().filter(status == "queued"),
                        sa.func.count().filter(status == "running"),
                    ).where(status.in_(ACTIVE_GENERATION_STATUSES))
                )
            ).first()
            queued, running = counts or (0, 0)
            trainings = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(_train_t)
                .where(_train_t.c.status.in_(ACTIVE_TRAINING_STATUSES))
            )
        return int(queued or 0), int(running or 0), int(trainings or 0)

    @shielded
    async def claim_budget_notice(self, scope: str, period: str, now: datetime) -> bool:
        """True for exactly one caller per ``scope`` and ``period``: whoever tells the
        admins that the budget is used up."""
        require_aware(now=now)
        stmt = (
            self._db.insert(_notice_t)
            .values(scope=scope, period=period, sent_at=now)
            .on_conflict_do_nothing(index_elements=[_notice_t.c.scope, _notice_t.c.period])
        )
        return await self._db.transact(lambda conn: conn.execute(stmt).rowcount > 0)
