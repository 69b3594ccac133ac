"""Small key/value state (e.g. the hash of the last synced command tree)."""

from __future__ import annotations

import sqlalchemy as sa

from services.store.base import Queries
from services.store.columns import utc_now
from services.store.engine import shielded
from services.store.schema import meta_table as _meta_t


class MetaQueries(Queries):
    @shielded
    async def get_meta(self, key: str) -> str | None:
        async with self._db.tx() as conn:
            return await conn.scalar(sa.select(_meta_t.c.value).where(_meta_t.c.key == key))

    @shielded
    async def set_meta(self, key: str, value: str) -> None:
        stmt = self._db.insert(_meta_t).values(key=key, value=value, updated_at=utc_now())
        stmt = stmt.on_conflict_do_update(
            index_elements=[_meta_t.c.key],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        )
        async with self._db.tx(write=True) as conn:
            await conn.execute(stmt)
