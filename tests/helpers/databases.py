"""A fresh database for one test: a SQLite file, or a PostgreSQL database of its own.

PostgreSQL is used when ``TEST_POSTGRES_URL`` names a server where this role may create
databases (``scripts/with-postgres`` starts a throwaway one and sets it). Tests marked
``@pytest.mark.backends`` run once per available backend.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from services.store import normalize_database_url

PG_URL = os.environ.get("TEST_POSTGRES_URL") or None
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@contextlib.asynccontextmanager
async def fresh_database(backend: str, folder: Path) -> AsyncIterator[str]:
    """The DATABASE_URL of an empty database, dropped afterwards (PostgreSQL)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'bot.sqlite3'}"
        return
    if PG_URL is None:
        raise RuntimeError("TEST_POSTGRES_URL is not set")
    admin_url = normalize_database_url(PG_URL)
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield admin_url.set(database=name, drivername="postgresql").render_as_string(
            hide_password=False
        )
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()
