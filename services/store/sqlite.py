"""SQLite connection set-up: PRAGMAs, explicit BEGIN modes, and the switch to WAL."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

#: How long a SQLite connection waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
#: Execution option read by the ``begin`` hook: ``DEFERRED``, ``IMMEDIATE`` or ``NONE``.
BEGIN_OPTION: Final = "store_sqlite_begin"


def install_sqlite_hooks(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would not emit BEGIN for
        # SELECT and DDL); the "begin" hook below emits it instead.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            # In WAL mode NORMAL loses nothing when the process dies, only on power loss.
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        if mode == "NONE":
            return
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"bad SQLite BEGIN mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


async def enable_wal(engine: AsyncEngine) -> None:
    """Switch the database file to WAL (a setting kept in the file), retrying while locked.

    Changing the journal mode upgrades a read lock to an exclusive one, and SQLite answers
    "database is locked" at once instead of waiting in its busy handler when another
    connection (another process opening the same file) holds a lock, so retry here.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            async with engine.connect() as conn:
                plain = await conn.execution_options(**{BEGIN_OPTION: "NONE"})
                mode = (await plain.exec_driver_sql("PRAGMA journal_mode = WAL")).scalar()
                if str(mode).lower() != "wal":
                    log.warning("SQLite kept journal mode %s instead of WAL", mode)
                return
        except sa_exc.OperationalError as exc:
            if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
