"""Store queries that only tests need, run on a store's own engine layer.

Typical use::

    from tests.helpers.store import recent_generations

    [newest] = await recent_generations(harness.services.store, limit=1)
"""

from __future__ import annotations

import sqlalchemy as sa

from services.store import Generation, Store
from services.store.generations import to_generation
from services.store.schema import generations_table


async def recent_generations(
    store: Store, *, user_key: str | None = None, limit: int = 10
) -> list[Generation]:
    """Newest first; all users unless ``user_key`` is given."""
    t = generations_table
    query = sa.select(t).order_by(t.c.created_at.desc(), t.c.id).limit(limit)
    if user_key is not None:
        query = query.where(t.c.user_key == user_key)
    async with store.db.tx() as conn:
        return [to_generation(r) for r in await conn.execute(query)]
