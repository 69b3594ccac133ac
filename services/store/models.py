"""Trained models (LoRAs) that can be picked for generation, per guild."""

from __future__ import annotations

from dataclasses import fields

import sqlalchemy as sa

from services.store.base import Queries
from services.store.columns import utc_now
from services.store.engine import shielded
from services.store.records import TrainedModel
from services.store.schema import models_table as _model_t

assert {c.name for c in _model_t.columns} == {f.name for f in fields(TrainedModel)}


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class ModelQueries(Queries):
    @shielded
    async def upsert_model(
        self,
        owner: str,
        name: str,
        *,
        guild_id: int | None,
        creator_key: str,
        trigger_word: str,
        latest_version: str | None,
    ) -> None:
        """Insert or update a trained model (owner and name are stored lowercase).

        ``guild_id`` and ``creator_key`` are kept from the first insert: the creator stays the
        owner of record. ``latest_version=None`` keeps the existing version.
        """
        now = utc_now()
        stmt = self._db.insert(_model_t).values(
            owner=owner.lower(),
            name=name.lower(),
            guild_id=guild_id,
            creator_key=creator_key,
            trigger_word=trigger_word,
            latest_version=latest_version,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[_model_t.c.owner, _model_t.c.name],
            set_={
                "trigger_word": stmt.excluded.trigger_word,
                "latest_version": sa.func.coalesce(
                    stmt.excluded.latest_version, _model_t.c.latest_version
                ),
                "updated_at": stmt.excluded.updated_at,
            },
        )
        async with self._db.tx(write=True) as conn:
            await conn.execute(stmt)

    @shielded
    async def get_model(self, owner: str, name: str) -> TrainedModel | None:
        async with self._db.tx() as conn:
            row = (
                await conn.execute(
                    sa.select(_model_t).where(
                        _model_t.c.owner == owner.lower(), _model_t.c.name == name.lower()
                    )
                )
            ).first()
        return TrainedModel(**row._mapping) if row else None

    @shielded
    async def models_for_guild(
        self, guild_id: int | None, prefix: str = "", limit: int = 25
    ) -> list[TrainedModel]:
        """Models with a version trained in that guild (``None``: trained in DMs), newest first.

        ``prefix`` matches the start of ``name`` or of ``owner/name``, case-insensitively.
        """
        query = sa.select(_model_t).where(_model_t.c.latest_version.is_not(None))
        if guild_id is None:
            query = query.where(_model_t.c.guild_id.is_(None))
        else:
            query = query.where(_model_t.c.guild_id == guild_id)
        prefix = prefix.strip().lower()
        if prefix:
            pattern = _like_prefix(prefix)
            full = _model_t.c.owner + "/" + _model_t.c.name
            query = query.where(
                sa.or_(
                    _model_t.c.name.like(pattern, escape="\\"),
                    full.like(pattern, escape="\\"),
                )
            )
        query = query.order_by(
            _model_t.c.updated_at.desc(), _model_t.c.owner, _model_t.c.name
        ).limit(max(0, limit))
        async with self._db.tx() as conn:
            return [TrainedModel(**r._mapping) for r in await conn.execute(query)]
