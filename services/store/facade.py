"""The :class:`Store` facade over the per-topic queries, and :func:`open_store`."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from services.store.engine import Database, open_database, shielded
from services.store.generations import GenerationQueries
from services.store.meta import MetaQueries
from services.store.migrations import migrate
from services.store.models import ModelQueries
from services.store.trainings import TrainingQueries
from services.store.url import normalize_database_url
from services.store.webhooks import WebhookQueries

log = logging.getLogger(__name__)


class Store(MetaQueries, GenerationQueries, TrainingQueries, ModelQueries, WebhookQueries):
    """Async access to the database. Create with :func:`open_store`; safe for many coroutines.

    Every public coroutine method is ``@shielded``: once called it runs to the end even if
    the caller is cancelled, and :meth:`close` waits for it (a test checks none is missed).
    """

    schema_version: int

    def __init__(self, db: Database) -> None:
        self._db = db
        self.schema_version = 0

    @property
    def db(self) -> Database:
        """The engine layer underneath (for tests and tools that need raw access)."""
        return self._db

    async def close(self) -> None:
        """Let calls in flight finish (they are shielded from cancellation), then close."""
        await self._db.close()

    @shielded
    async def ping(self) -> bool:
        """True if the database answers a trivial query."""
        if self._db.closed:
            return False
        try:
            async with self._db.tx() as conn:
                return (await conn.scalar(sa.select(1))) == 1
        except Exception:
            log.warning("Database ping failed", exc_info=True)
            return False


async def open_store(database_url: str) -> Store:
    """Connect, apply pending migrations and return a ready :class:`Store`.

    Raises ``ValueError`` for a malformed or unsupported DATABASE_URL.
    """
    url = normalize_database_url(database_url)
    store = Store(await open_database(url))
    try:
        store.schema_version = await migrate(store.db)
    except BaseException:
        await store.close()
        raise
    log.info(
        "Store open (%s, schema version %d)",
        url.render_as_string(hide_password=True),
        store.schema_version,
    )
    return store
