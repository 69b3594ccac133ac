"""Small key/value state (e.g. the hash of the last synced command tree)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import sqlalchemy as sa

from services.store.base import Queries
from services.store.columns import require_aware, utc_now
from services.store.engine import shielded
from services.store.schema import meta_table as _meta_t

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


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

    @shielded
    async def swap_meta(self, key: str, value: str) -> tuple[bool, str | None]:
        """Set ``key`` to ``value`` unless it already is; returns whether this call changed
        it, and the value before. Of several processes doing this at once, exactly one
        changes it."""

        def swap(conn: sa.Connection) -> tuple[bool, str | None]:
            old = conn.scalar(
                sa.select(_meta_t.c.value).where(_meta_t.c.key == key).with_for_update()
            )
            if old == value:
                return False, old
            stmt = self._db.insert(_meta_t).values(key=key, value=value, updated_at=utc_now())
            stmt = stmt.on_conflict_do_update(
                index_elements=[_meta_t.c.key],
                set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
                where=_meta_t.c.value != stmt.excluded.value,
            )
            return conn.execute(stmt).rowcount > 0, old

        return await self._db.transact(swap)

    @shielded
    async def claim_slot(self, key: str, now: datetime, interval: timedelta) -> float:
        """Take the slot named ``key`` if it was last taken at least ``interval`` ago
        (by any process); returns 0 when taken, else the seconds to wait before asking
        again. One caller wins each slot: the update is conditional on the time."""
        require_aware(now=now)

        def claim(conn: sa.Connection) -> float:
            seed = self._db.insert(_meta_t).values(key=key, value="", updated_at=_EPOCH)
            conn.execute(seed.on_conflict_do_nothing(index_elements=[_meta_t.c.key]))
            taken = conn.execute(
                sa.update(_meta_t)
                .where(_meta_t.c.key == key, _meta_t.c.updated_at <= now - interval)
                .values(updated_at=now)
            ).rowcount
            if taken:
                return 0.0
            last = conn.scalar(sa.select(_meta_t.c.updated_at).where(_meta_t.c.key == key))
            return max(0.01, (last + interval - now).total_seconds()) if last else 0.01

        return await self._db.transact(claim)
