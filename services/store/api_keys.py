"""Keys of the HTTP API: only the SHA-256 of each key is kept, never the key."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from services.store.base import Queries
from services.store.columns import require_aware
from services.store.engine import shielded
from services.store.schema import api_keys_table as _keys_t


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    name: str
    key_hash: str
    #: Generations a day (0: unlimited); None: the owner's default.
    per_day: int | None
    #: Seconds between two generations; None: the owner's default.
    cooldown: float | None
    #: Monthly budget in USD; None: none.
    budget_usd: float | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


assert {c.name for c in _keys_t.columns} == {f.name for f in fields(ApiKeyRecord)}


def _record(row: sa.Row[Any]) -> ApiKeyRecord:
    return ApiKeyRecord(**dict(row._mapping))


class ApiKeyQueries(Queries):
    @shielded
    async def create_api_key(
        self,
        name: str,
        key_hash: str,
        *,
        per_day: int | None,
        cooldown: float | None,
        budget_usd: float | None,
        now: datetime,
    ) -> ApiKeyRecord:
        """Raises ``sqlalchemy.exc.IntegrityError`` if an active key has this name."""
        require_aware(now=now)
        values = {
            "name": name,
            "key_hash": key_hash,
            "per_day": per_day,
            "cooldown": cooldown,
            "budget_usd": budget_usd,
            "created_at": now,
            "revoked_at": None,
        }
        return _record(await self._insert_with_id(_keys_t, values, None))

    @shielded
    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The active key with this hash."""
        return await self._one_key(_keys_t.c.key_hash == key_hash, _keys_t.c.revoked_at.is_(None))

    @shielded
    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        return await self._one_key(_keys_t.c.id == key_id)

    async def _one_key(self, *cond: sa.ColumnElement[bool]) -> ApiKeyRecord | None:
        async with self._db.tx() as conn:
            row = (await conn.execute(sa.select(_keys_t).where(*cond))).first()
        return _record(row) if row is not None else None

    @shielded
    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones too, oldest first."""
        async with self._db.tx() as conn:
            rows = await conn.execute(sa.select(_keys_t).order_by(_keys_t.c.created_at))
            return [_record(r) for r in rows]

    @shielded
    async def has_api_keys(self) -> bool:
        """Whether any key is active."""
        async with self._db.tx() as conn:
            found = await conn.scalar(
                sa.select(_keys_t.c.id).where(_keys_t.c.revoked_at.is_(None)).limit(1)
            )
        return found is not None

    @shielded
    async def revoke_api_key(self, name: str, now: datetime) -> bool:
        """Revoke the active key named ``name``; False if there is none."""
        require_aware(now=now)
        return await self._update(
            _keys_t,
            sa.and_(_keys_t.c.name == name, _keys_t.c.revoked_at.is_(None)),
            {"revoked_at": now},
        )
