"""What the per-topic query classes share: ids, checked updates, and prebuilt hot statements."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from services.store.columns import require_aware, utc_now
from services.store.engine import Database
from services.store.events import StoreEvents
from services.store.writer import WriteOp

log = logging.getLogger(__name__)


def new_id() -> str:
    """12 url-safe characters (72 random bits): fits a Discord custom_id beside a prefix."""
    return secrets.token_urlsafe(9)


def new_nonce() -> str:
    """20 hex characters: a Discord message nonce may have at most 25."""
    return secrets.token_hex(10)


def checked_fields(
    fields_: Mapping[str, Any], allowed: frozenset[str], statuses: frozenset[str], what: str
) -> dict[str, Any]:
    unknown = set(fields_) - allowed
    if unknown:
        raise TypeError(f"unknown {what} field(s): {', '.join(sorted(unknown))}")
    if "status" in fields_ and fields_["status"] not in statuses:
        raise ValueError(f"invalid {what} status {fields_['status']!r}")
    require_aware(**fields_)
    return dict(fields_)


# Built once per table, so SQLAlchemy's compiled cache is hit without building a cache key
# per call (hot paths: several writes per job).


@functools.cache
def update_by_id_stmt(table: sa.Table) -> Any:
    return sa.update(table).where(table.c.id == sa.bindparam("_row_id")).returning(*table.c)


@functools.cache
def set_by_id_stmt(table: sa.Table) -> Any:
    """Like :func:`update_by_id_stmt`, without reading the row back."""
    return sa.update(table).where(table.c.id == sa.bindparam("_row_id"))


@functools.cache
def insert_stmt(table: sa.Table) -> Any:
    return sa.insert(table).returning(*table.c)


@functools.cache
def get_by_id_stmt(table: sa.Table) -> Any:
    return sa.select(table).where(table.c.id == sa.bindparam("_row_id"))


def advisory_lock(conn: sa.Connection, key: int) -> None:
    """Hold ``key`` until the transaction ends (PostgreSQL). On SQLite the write
    transaction already excludes every other writer."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.literal(key, sa.BigInteger))))


class Queries:
    """Base of the per-topic query classes that :class:`~services.store.Store` combines."""

    _db: Database
    #: Change notices (see :mod:`services.store.events`); set by the facade.
    events: StoreEvents

    async def _update(
        self, table: sa.Table, cond: sa.ColumnElement[bool], values: dict[str, Any]
    ) -> bool:
        if "updated_at" in table.c:
            values = {**values, "updated_at": utc_now()}
        stmt = sa.update(table).where(cond).values(**values)
        return bool(await self._db.write(WriteOp(stmt, None, "rowcount")))

    async def _set_by_id(self, table: sa.Table, row_id: str, values: dict[str, Any]) -> bool:
        """Set ``values`` on one row; False if there is none."""
        if "updated_at" in table.c:
            values = {**values, "updated_at": utc_now()}
        params = {**values, "_row_id": row_id}
        return bool(await self._db.write(WriteOp(set_by_id_stmt(table), params, "rowcount")))

    async def _update_by_id(
        self, table: sa.Table, row_id: str, values: dict[str, Any]
    ) -> sa.Row[Any] | None:
        """Set ``values`` on one row; the row as stored, or None if there is none."""
        if "updated_at" in table.c:
            values = {**values, "updated_at": utc_now()}
        params = {**values, "_row_id": row_id}
        row: sa.Row[Any] | None = await self._db.write(
            WriteOp(update_by_id_stmt(table), params, "first")
        )
        return row

    async def _insert_with_id(
        self, table: sa.Table, values: dict[str, Any], given_id: str | None
    ) -> sa.Row[Any]:
        """Insert with a fresh random id, retrying on the (astronomically rare) id clash;
        returns the row as stored."""
        for _attempt in range(5):
            row_id = given_id or new_id()
            op = WriteOp(insert_stmt(table), {**values, "id": row_id}, "one")
            try:
                row: sa.Row[Any] = await self._db.write(op)
                return row
            except sa_exc.IntegrityError:
                if given_id is not None or not await self._id_exists(table, row_id):
                    raise
                log.warning("Random id clash in %s, retrying", table.name)
        raise RuntimeError(f"could not allocate a unique id in {table.name}")

    async def _id_exists(self, table: sa.Table, row_id: str) -> bool:
        async with self._db.tx() as conn:
            return (
                await conn.scalar(sa.select(table.c.id).where(table.c.id == row_id))
            ) is not None
