"""Store queries that only tests need, run on a store's own engine layer.

Typical use::

    from tests.helpers.store import PostgresCompiler, recent_generations

    [newest] = await recent_generations(harness.services.store, limit=1)
    store = Store(PostgresCompiler())  # statements compiled for PostgreSQL, never run
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services.store import Generation, Store, normalize_database_url
from services.store.engine import Database
from services.store.generations import to_generation
from services.store.schema import generations_table
from services.store.writer import WriteOp


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


class PostgresCompiler(Database):
    """A PostgreSQL :class:`Database` that compiles every statement instead of running it.

    Lets tests check the PostgreSQL SQL of each store method without a server: reads find
    nothing, updates match no row, and an insert returns the row it was given.
    """

    def __init__(self) -> None:
        super().__init__(
            create_async_engine("postgresql+asyncpg://compile-only/none"), serialize_all=False
        )
        #: Each statement's SQL, in order.
        self.sql: list[str] = []

    def compile(self, stmt: Any, params: dict[str, Any] | None = None) -> None:
        compiled = stmt.compile(
            dialect=self.engine.dialect,
            column_keys=list(params) if params else None,
            compile_kwargs={"render_postcompile": True},
        )
        self.sql.append(" ".join(str(compiled).split()))

    @contextlib.asynccontextmanager
    async def tx(self, *, write: bool = False) -> AsyncIterator[Any]:
        yield _CompilingConnection(self)

    async def write(self, op: WriteOp) -> Any:
        if op.result == "call":
            return op.stmt(_SyncCompilingConnection(self))
        self.compile(op.stmt, op.params)
        if op.result == "rowcount":
            return False
        if op.result == "first":
            return None
        values = op.params or {}
        return SimpleNamespace(_mapping={c.name: values.get(c.name) for c in op.stmt.table.c})


class _CompilingConnection:
    def __init__(self, db: PostgresCompiler) -> None:
        self._db = db

    async def execute(self, stmt: Any, params: dict[str, Any] | None = None) -> Any:
        self._db.compile(stmt, params)
        return _NoRows()

    async def scalar(self, stmt: Any, params: dict[str, Any] | None = None) -> None:
        self._db.compile(stmt, params)

    async def scalars(self, stmt: Any, params: dict[str, Any] | None = None) -> _NoRows:
        self._db.compile(stmt, params)
        return _NoRows()


class _SyncCompilingConnection:
    """What a function given to ``Database.transact`` sees: statements are compiled;
    aggregates answer zeros, everything else finds nothing."""

    def __init__(self, db: PostgresCompiler) -> None:
        self._db = db
        self.dialect = db.engine.dialect

    def execute(self, stmt: Any, params: Any = None) -> _NoRows:
        self._db.compile(stmt, params if isinstance(params, dict) else None)
        if getattr(stmt, "returning_column_descriptions", None):
            names = [d["name"] for d in stmt.returning_column_descriptions]
        else:
            names = [c.key for c in getattr(stmt, "selected_columns", ())]
        return _NoRows(names)

    def scalar(self, stmt: Any, params: Any = None) -> None:
        self._db.compile(stmt, params)

    def scalars(self, stmt: Any, params: Any = None) -> Iterator[Any]:
        self._db.compile(stmt, params)
        return iter(())


class _ZeroRow(tuple[Any, ...]):
    """A row of zeros, readable by position or by name."""

    _mapping: dict[str, Any]


class _NoRows:
    rowcount = 0

    def __init__(self, names: list[str] | None = None) -> None:
        self._names = names or []

    def first(self) -> None:
        return None

    def one(self) -> _ZeroRow:
        row = _ZeroRow((0,) * len(self._names))
        row._mapping = dict.fromkeys(self._names)
        return row

    def all(self) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


async def wait_for_generation(
    store: Store,
    gen_id: str,
    predicate: Callable[[Generation], bool],
    timeout: float = 10.0,  # noqa: ASYNC109 (the test API takes timeouts)
) -> Generation:
    """The generation once ``predicate`` holds, re-read whenever the store sends a
    notice (every job that ends sends one)."""
    changed = asyncio.Event()
    unsubscribe = store.events.subscribe(lambda _topic: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while True:
                changed.clear()
                job = await store.get_generation(gen_id)
                if job is not None and predicate(job):
                    return job
                await changed.wait()
    finally:
        unsubscribe()


async def wait_for_stored_prediction_ids(
    database_url: str,
    count: int,
    replicate_emu: Any,
    timeout: float = 10.0,  # noqa: ASYNC109 (the test API takes timeouts)
) -> None:
    """Wait until ``count`` generations of the bot's store (another process's) have their
    prediction id recorded: re-read after each request the bot makes to the Replicate
    emulator, since the bot's polls keep coming while it works."""
    engine = create_async_engine(normalize_database_url(database_url))
    t = generations_table
    query = sa.select(sa.func.count()).where(t.c.prediction_id.is_not(None))
    try:
        async with asyncio.timeout(timeout):
            while True:
                async with engine.connect() as conn:
                    if (await conn.scalar(query) or 0) >= count:
                        return
                seen = replicate_emu.counts["requests"]
                await replicate_emu.wait_for(
                    lambda seen=seen: replicate_emu.counts["requests"] > seen, timeout=timeout
                )
    finally:
        await engine.dispose()
