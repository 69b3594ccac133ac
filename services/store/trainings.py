"""LoRA trainings: the local record of a Replicate training, its progress and its notification."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from services.store.base import (
    Queries,
    advisory_lock,
    checked_fields,
    new_id,
    new_nonce,
    update_by_id_stmt,
)
from services.store.columns import require_aware, utc_now
from services.store.engine import shielded
from services.store.jobs import Refusal, day_start
from services.store.records import (
    ACTIVE_TRAINING_STATUSES,
    SOURCES,
    TRAINING_STATUSES,
    NewTraining,
    Training,
)
from services.store.schema import trainings_table as _train_t
from services.store.schema import webhooks_table as _webhook_t
from services.store.usage import Budget, BudgetTally
from services.store.webhooks import webhook_insert

# The row-to-record mapping relies on columns and dataclass fields having the same names.
assert {c.name for c in _train_t.columns} == {f.name for f in fields(Training)}

_UPDATABLE: Final = frozenset(c.name for c in _train_t.columns) - {
    "id",
    "created_at",
    "updated_at",
    "notice_nonce",
}


def to_training(row: sa.Row[Any]) -> Training:
    data = dict(row._mapping)
    data["params"] = data.get("params") or {}
    return Training(**data)


#: One training, locked until the transaction ends on PostgreSQL (SQLite's write
#: transaction already excludes other writers).
_LOCKED_BY_ID: Final = (
    sa.select(_train_t).where(_train_t.c.id == sa.bindparam("_row_id")).with_for_update()
)

#: Key of the PostgreSQL advisory lock that serialises training admission.
TRAININGS_LOCK: Final = 0x5452_4E5F_41444D54


def training_topic(local_id: str) -> str:
    """Notice topic of one training: its state changed in the store."""
    return f"training:{local_id}"


@dataclass(frozen=True, slots=True)
class TrainingChange:
    """What :meth:`TrainingQueries.change_training` did: the training as stored and the
    columns it set; ``duplicate`` (and no training) for a webhook id seen before."""

    training: Training | None
    changes: dict[str, Any]
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class TrainingLimits:
    #: Trainings a user may start per UTC day (0: unlimited).
    per_day: int = 0
    #: Trainings running at once in one server (or, for ``guild_id=None``, outside servers).
    per_guild: int = 2
    #: Monthly budgets the training counts against (its server's, its API key's).
    budgets: tuple[Budget, ...] = ()


def _counts_toward_quota() -> sa.ColumnElement[bool]:
    """A training that failed before it reached Replicate cost nothing and does not count."""
    return sa.not_(sa.and_(_train_t.c.status == "failed", _train_t.c.training_id.is_(None)))


def _admit_training(
    conn: sa.Connection,
    t: NewTraining,
    limits: TrainingLimits,
    owner: str,
    now: datetime,
    lease_until: datetime,
) -> Training | Refusal:
    advisory_lock(conn, TRAININGS_LOCK)
    if limits.per_day:
        used = conn.scalar(
            sa.select(sa.func.count())
            .select_from(_train_t)
            .where(
                _train_t.c.user_key == t.user_key,
                _train_t.c.created_at >= day_start(now),
                _counts_toward_quota(),
            )
        )
        if int(used or 0) >= limits.per_day:
            reset = day_start(now) + timedelta(days=1)
            return Refusal("quota", (reset - now).total_seconds(), limits.per_day)
    scope = (
        _train_t.c.guild_id.is_(None) if t.guild_id is None else _train_t.c.guild_id == t.guild_id
    )
    active = conn.scalar(
        sa.select(sa.func.count())
        .select_from(_train_t)
        .where(_train_t.c.status.in_(ACTIVE_TRAINING_STATUSES), scope)
    )
    if int(active or 0) >= limits.per_guild:
        return Refusal("busy", 600.0, limits.per_guild)
    spent = BudgetTally(conn).exceeded(limits.budgets)
    if spent is not None:
        return Refusal("budget", (spent.until - now).total_seconds(), spent.limit, spent)
    values = _new_values(t, now) | {
        "id": t.id or new_id(),
        "lease_owner": owner,
        "lease_expires_at": lease_until,
    }
    row = conn.execute(sa.insert(_train_t).values(**values).returning(*_train_t.c)).one()
    return to_training(row)


def _new_values(t: NewTraining, now: datetime) -> dict[str, Any]:
    if t.status not in TRAINING_STATUSES:
        raise ValueError(f"invalid training status {t.status!r}")
    if t.source not in SOURCES:
        raise ValueError(f"invalid source {t.source!r}")
    require_aware(created_at=t.created_at)
    nonce = t.notice_nonce or new_nonce()
    if len(nonce) > 25:
        raise ValueError("notice_nonce must be at most 25 characters (Discord nonce limit)")
    return {
        "training_id": t.training_id,
        "user_key": t.user_key,
        "user_id": t.user_id,
        "guild_id": t.guild_id,
        "channel_id": t.channel_id,
        "model_owner": t.model_owner,
        "model_name": t.model_name,
        "trigger_word": t.trigger_word,
        "steps": t.steps,
        "params": dict(t.params),
        "status": t.status,
        "total_steps": t.total_steps if t.total_steps is not None else t.steps,
        "status_message_id": t.status_message_id,
        "created_at": t.created_at or now,
        "updated_at": now,
        "notice_nonce": nonce,
        "source": t.source,
        "cost_reserved": t.cost_reserved,
    }


class TrainingQueries(Queries):
    @shielded
    async def create_training(self, t: NewTraining) -> Training:
        values = _new_values(t, utc_now())
        return to_training(await self._insert_with_id(_train_t, values, t.id))

    @shielded
    async def admit_training(
        self,
        t: NewTraining,
        limits: TrainingLimits,
        owner: str,
        now: datetime,
        lease_until: datetime,
    ) -> Training | Refusal:
        """Check the daily quota and the server's running trainings and record the
        training (status ``starting``, leased to ``owner`` until Replicate's id is known),
        as one atomic step."""
        require_aware(now=now, lease_until=lease_until)
        return await self._db.transact(
            lambda conn: _admit_training(conn, t, limits, owner, now, lease_until)
        )

    @shielded
    async def renew_training_leases(self, owner: str, until: datetime) -> int:
        """Extend the leases ``owner`` holds on trainings it is still starting."""
        require_aware(until=until)
        stmt = (
            sa.update(_train_t)
            .where(
                _train_t.c.lease_owner == owner,
                _train_t.c.training_id.is_(None),
                _train_t.c.status == "starting",
            )
            .values(lease_expires_at=until)
        )
        return int(await self._db.transact(lambda conn: conn.execute(stmt).rowcount))

    @shielded
    async def abandoned_trainings(self, now: datetime, error: str) -> list[Training]:
        """Trainings whose process died while starting them (before Replicate's id was
        recorded), each returned to one caller only: their lease is ended for good."""
        require_aware(now=now)
        cond = sa.and_(
            _train_t.c.status == "starting",
            _train_t.c.training_id.is_(None),
            sa.or_(_train_t.c.lease_expires_at.is_(None), _train_t.c.lease_expires_at < now),
        )

        def take(conn: sa.Connection) -> list[Training]:
            ids = list(
                conn.scalars(sa.select(_train_t.c.id).where(cond).with_for_update(skip_locked=True))
            )
            if not ids:
                return []
            rows = conn.execute(
                sa.update(_train_t)
                .where(_train_t.c.id.in_(ids), cond)
                .values(
                    status="failed", error=error, completed_at=now, updated_at=now, lease_owner=None
                )
                .returning(*_train_t.c)
            ).all()
            return [to_training(r) for r in rows]

        return await self._db.transact(take)

    @shielded
    async def get_training(self, local_id: str) -> Training | None:
        return await self._one_training(_train_t.c.id == local_id)

    @shielded
    async def get_training_by_replicate_id(self, training_id: str) -> Training | None:
        return await self._one_training(_train_t.c.training_id == training_id)

    async def _one_training(self, cond: sa.ColumnElement[bool]) -> Training | None:
        async with self._db.tx() as conn:
            row = (await conn.execute(sa.select(_train_t).where(cond))).first()
        return to_training(row) if row else None

    @shielded
    async def update_training(self, local_id: str, **fields_: Any) -> bool:
        """Set the given columns. Returns False if there is no such training.

        Raises ``sqlalchemy.exc.IntegrityError`` if ``training_id`` is already used elsewhere.
        """
        values = checked_fields(fields_, _UPDATABLE, TRAINING_STATUSES, "training")
        return await self._set_by_id(_train_t, local_id, values)

    @shielded
    async def change_training(
        self,
        local_id: str,
        decide: Callable[[Training], Mapping[str, Any]],
        *,
        webhook_id: str | None = None,
        received_at: datetime | None = None,
    ) -> TrainingChange | None:
        """Read the training, set the columns ``decide(training)`` returns, and return the
        training as stored with what changed, in one write transaction; None if there is
        no such training. ``decide`` runs inside the transaction: it must not block.

        With ``webhook_id``, the delivery's id is recorded in the same transaction, and
        nothing changes if it was recorded before (``duplicate``)."""
        if webhook_id is not None:
            require_aware(received_at=received_at)
            record = webhook_insert(self._db.insert(_webhook_t))

        def change(conn: sa.Connection) -> TrainingChange | None:
            if webhook_id is not None:
                params = {"webhook_id": webhook_id, "received_at": received_at}
                if conn.execute(record, params).rowcount != 1:
                    return TrainingChange(None, {}, duplicate=True)
            row = conn.execute(_LOCKED_BY_ID, {"_row_id": local_id}).first()
            if row is None:
                return None
            current = to_training(row)
            values = checked_fields(decide(current), _UPDATABLE, TRAINING_STATUSES, "training")
            if not values:
                return TrainingChange(current, values)
            params = {**values, "updated_at": utc_now(), "_row_id": local_id}
            stored = conn.execute(update_by_id_stmt(_train_t), params).one()
            return TrainingChange(to_training(stored), values)

        return await self._db.transact(change)

    @shielded
    async def unfinished_trainings(self) -> list[Training]:
        """Trainings whose final notification has not been claimed yet, oldest first.

        Includes finished ones: a crash between "succeeded" and the notification must still
        lead to exactly one notification after restart.
        """
        async with self._db.tx() as conn:
            rows = await conn.execute(
                sa.select(_train_t)
                .where(_train_t.c.notified_at.is_(None))
                .order_by(_train_t.c.created_at, _train_t.c.id)
            )
            return [to_training(r) for r in rows]

    @shielded
    async def claim_notification(self, local_id: str, now: datetime) -> bool:
        """Atomically set ``notified_at`` if unset. True for exactly one caller, ever."""
        require_aware(now=now)
        return await self._update(
            _train_t,
            sa.and_(_train_t.c.id == local_id, _train_t.c.notified_at.is_(None)),
            {"notified_at": now},
        )

    @shielded
    async def claim_status_edit(
        self, local_id: str, now: datetime, min_interval: timedelta
    ) -> bool:
        """Rate limit for progress-message edits shared by all processes.

        Sets ``last_status_edit_at = now`` and returns True only if the previous edit is at
        least ``min_interval`` old (or there was none).
        """
        return await self._claim_interval(
            _train_t.c.last_status_edit_at, local_id, now, min_interval
        )

    @shielded
    async def claim_poll(self, local_id: str, now: datetime, min_interval: timedelta) -> bool:
        """Like :meth:`claim_status_edit` for ``last_polled_at``: one poller per interval."""
        return await self._claim_interval(_train_t.c.last_polled_at, local_id, now, min_interval)

    async def _claim_interval(
        self, column: sa.Column[Any], local_id: str, now: datetime, min_interval: timedelta
    ) -> bool:
        require_aware(now=now)
        cond = sa.and_(
            _train_t.c.id == local_id,
            sa.or_(column.is_(None), column <= now - min_interval),
        )
        return await self._update(_train_t, cond, {column.name: now})

    @shielded
    async def count_trainings_since(self, user_key: str, since: datetime) -> int:
        """Trainings created by ``user_key`` at or after ``since`` (quota window)."""
        require_aware(since=since)
        async with self._db.tx() as conn:
            n = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(_train_t)
                .where(
                    _train_t.c.user_key == user_key,
                    _train_t.c.created_at >= since,
                    _counts_toward_quota(),
                )
            )
        return int(n or 0)

    @shielded
    async def count_active_trainings(self, guild_id: int | None) -> int:
        """Trainings in ``starting``/``processing`` started in that guild (``None``: in DMs)."""
        scope = (
            _train_t.c.guild_id.is_(None) if guild_id is None else _train_t.c.guild_id == guild_id
        )
        query = (
            sa.select(sa.func.count())
            .select_from(_train_t)
            .where(_train_t.c.status.in_(ACTIVE_TRAINING_STATUSES), scope)
        )
        async with self._db.tx() as conn:
            return int(await conn.scalar(query) or 0)

    @shielded
    async def recent_trainings(
        self, *, guild_id: int | None, user_id: int | None, limit: int = 10
    ) -> list[Training]:
        """Newest first. Each filter left as ``None`` is not applied."""
        query = sa.select(_train_t)
        if guild_id is not None:
            query = query.where(_train_t.c.guild_id == guild_id)
        if user_id is not None:
            query = query.where(_train_t.c.user_id == user_id)
        query = query.order_by(_train_t.c.created_at.desc(), _train_t.c.id).limit(max(0, limit))
        async with self._db.tx() as conn:
            return [to_training(r) for r in await conn.execute(query)]
