"""LoRA trainings: the local record of a Replicate training, its progress and its notification."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from services.store.base import Queries, checked_fields, new_nonce
from services.store.columns import require_aware, utc_now
from services.store.engine import shielded
from services.store.records import (
    ACTIVE_TRAINING_STATUSES,
    SOURCES,
    TRAINING_STATUSES,
    NewTraining,
    Training,
)
from services.store.schema import trainings_table as _train_t

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


class TrainingQueries(Queries):
    @shielded
    async def create_training(self, t: NewTraining) -> Training:
        if t.status not in TRAINING_STATUSES:
            raise ValueError(f"invalid training status {t.status!r}")
        if t.source not in SOURCES:
            raise ValueError(f"invalid source {t.source!r}")
        require_aware(created_at=t.created_at)
        nonce = t.notice_nonce or new_nonce()
        if len(nonce) > 25:
            raise ValueError("notice_nonce must be at most 25 characters (Discord nonce limit)")
        now = utc_now()
        values = {
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
        }
        return to_training(await self._insert_with_id(_train_t, values, t.id))

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
        return await self._update_by_id(_train_t, local_id, values) is not None

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
                .where(_train_t.c.user_key == user_key, _train_t.c.created_at >= since)
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
