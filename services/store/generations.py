"""Generation jobs: one row per /generate or API request, from queued to a final status."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from services.store.base import Queries, checked_fields, get_by_id_stmt
from services.store.columns import require_aware, utc_now
from services.store.engine import shielded
from services.store.records import (
    ACTIVE_GENERATION_STATUSES,
    GENERATION_STATUSES,
    SOURCES,
    Generation,
    NewGeneration,
)
from services.store.schema import generations_table as _gen_t

# The row-to-record mapping relies on columns and dataclass fields having the same names.
assert {c.name for c in _gen_t.columns} == {f.name for f in fields(Generation)}

_UPDATABLE: Final = frozenset(c.name for c in _gen_t.columns) - {"id", "created_at", "updated_at"}


def to_generation(row: sa.Row[Any]) -> Generation:
    data = dict(row._mapping)
    data["params"] = data.get("params") or {}
    return Generation(**data)


class GenerationQueries(Queries):
    @shielded
    async def create_generation(self, g: NewGeneration) -> Generation:
        if g.status not in GENERATION_STATUSES:
            raise ValueError(f"invalid generation status {g.status!r}")
        if g.source not in SOURCES:
            raise ValueError(f"invalid source {g.source!r}")
        require_aware(created_at=g.created_at)
        now = utc_now()
        values = {
            "user_key": g.user_key,
            "user_id": g.user_id,
            "guild_id": g.guild_id,
            "channel_id": g.channel_id,
            "prompt": g.prompt,
            "model": g.model,
            "params": dict(g.params),
            "status": g.status,
            "created_at": g.created_at or now,
            "updated_at": now,
            "interaction_id": g.interaction_id,
            "source": g.source,
            "cost_reserved": g.cost_reserved,
        }
        return to_generation(await self._insert_with_id(_gen_t, values, g.id))

    @shielded
    async def get_generation(self, gen_id: str) -> Generation | None:
        async with self._db.tx() as conn:
            row = (await conn.execute(get_by_id_stmt(_gen_t), {"_row_id": gen_id})).first()
        return to_generation(row) if row else None

    @shielded
    async def get_generation_by_prediction_id(self, prediction_id: str) -> Generation | None:
        async with self._db.tx() as conn:
            row = (
                await conn.execute(
                    sa.select(_gen_t).where(_gen_t.c.prediction_id == prediction_id).limit(1)
                )
            ).first()
        return to_generation(row) if row else None

    @shielded
    async def update_generation(self, gen_id: str, **fields_: Any) -> bool:
        """Set the given columns. Returns False if there is no such generation."""
        values = checked_fields(fields_, _UPDATABLE, GENERATION_STATUSES, "generation")
        return await self._set_by_id(_gen_t, gen_id, values)

    @shielded
    async def set_generation(self, gen_id: str, **fields_: Any) -> Generation | None:
        """Like :meth:`update_generation`, and return the generation as stored (None if
        there is no such generation)."""
        values = checked_fields(fields_, _UPDATABLE, GENERATION_STATUSES, "generation")
        row = await self._update_by_id(_gen_t, gen_id, values)
        return to_generation(row) if row is not None else None

    @shielded
    async def count_generations_by_user(self, since: datetime) -> dict[str, int]:
        """Generations created at or after ``since``, per user_key (users with none are
        left out)."""
        require_aware(since=since)
        query = (
            sa.select(_gen_t.c.user_key, sa.func.count())
            .where(_gen_t.c.created_at >= since)
            .group_by(_gen_t.c.user_key)
        )
        async with self._db.tx() as conn:
            return {key: int(n) for key, n in await conn.execute(query)}

    @shielded
    async def unfinished_generations(self) -> list[Generation]:
        """Queued or running generations, oldest first."""
        query = sa.select(_gen_t).where(_gen_t.c.status.in_(ACTIVE_GENERATION_STATUSES))
        async with self._db.tx() as conn:
            rows = await conn.execute(query.order_by(_gen_t.c.created_at, _gen_t.c.id))
            return [to_generation(r) for r in rows]
