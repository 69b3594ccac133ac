"""The :class:`Store` facade over the per-topic queries, and :func:`open_store`."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from services.store.api_keys import ApiKeyQueries
from services.store.engine import Database, open_database, shielded
from services.store.events import PostgresEvents, StoreEvents
from services.store.generations import GenerationQueries
from services.store.guild_settings import GuildSettingsQueries
from services.store.jobs import JobQueries
from services.store.meta import MetaQueries
from services.store.migrations import migrate
from services.store.models import ModelQueries
from services.store.processes import ProcessQueries
from services.store.trainings import TrainingQueries
from services.store.url import asyncpg_dsn, normalize_database_url
from services.store.usage import UsageQueries
from services.store.webhooks import WebhookQueries

log = logging.getLogger(__name__)


class Store(
    MetaQueries,
    GenerationQueries,
    JobQueries,
    TrainingQueries,
    ModelQueries,
    WebhookQueries,
    ProcessQueries,
    GuildSettingsQueries,
    UsageQueries,
    ApiKeyQueries,
):
    """Async access to the database. Create with :func:`open_store`; safe for many coroutines.

    Every public coroutine method is ``@shielded``: once called it runs to the end even if
    the caller is cancelled, and :meth:`close` waits for it (a test checks none is missed).
    """

    schema_version: int

    def __init__(self, db: Database, events: StoreEvents | None = None) -> None:
        self._db = db
        #: Change notices shared by every process using this store.
        self.events = events or StoreEvents()
        self.schema_version = 0
        self._end_hooks = []

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    @property
    def db(self) -> Database:
        """The engine layer underneath (for tests and tools that need raw access)."""
        return self._db

    async def close(self) -> None:
        """Let calls in flight finish (they are shielded from cancellation), then close."""
        await self.events.close()
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
    db = await open_database(url)
    events = PostgresEvents(asyncpg_dsn(url)) if db.dialect == "postgresql" else StoreEvents()
    store = Store(db, events)
    try:
        store.schema_version = await migrate(store.db)
        await events.start()
    except BaseException:
        await store.close()
        raise
    log.info(
        "Store open (%s, schema version %d)",
        url.render_as_string(hide_password=True),
        store.schema_version,
    )
    return store
