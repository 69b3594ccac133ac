"""The engine layer: connections, short transactions, group-committed writes, and closing.

SQLite concurrency
    Every connection runs in WAL mode with a busy timeout. Write transactions start with
    ``BEGIN IMMEDIATE``, which takes the write lock up front: a deferred transaction that
    upgrades from reading to writing fails at once with "database is locked", whatever the
    busy timeout. Writers of one process also queue on an ``asyncio.Lock``, so they wait on the
    event loop instead of polling SQLite's busy handler; the busy timeout remains for other
    processes using the same file. aiosqlite runs each connection in its own thread, so waiting
    for a lock never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, StaticPool

from services.store.sqlite import BEGIN_OPTION, enable_wal, install_sqlite_hooks
from services.store.url import is_memory_sqlite, prepare_sqlite_path
from services.store.writer import GroupWriter, WriteOp

T = TypeVar("T")
P = ParamSpec("P")

CLOSE_TIMEOUT: Final = 10.0
WRITE_GROUP_MAX: Final = 200


class Database:
    """Transactions and writes on one engine; safe for many coroutines."""

    def __init__(self, engine: AsyncEngine, *, serialize_all: bool) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._is_sqlite = self.dialect == "sqlite"
        # Connections from this engine begin with BEGIN IMMEDIATE on SQLite (write lock up front).
        self._write_engine = (
            engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"}) if self._is_sqlite else engine
        )
        # SQLite allows one writer at a time; queueing here is cheaper than SQLite's busy loop.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self._is_sqlite else None
        self._serialize_all = serialize_all
        self.closed = False
        self._inflight: set[asyncio.Task[Any]] = set()
        self._write_queue: list[tuple[WriteOp, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: Set on a SQLite file: writes are then committed in groups by its thread.
        self.group_writer: GroupWriter | None = None

    def shield(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Run ``coro`` as its own task, shielded from the caller's cancellation.

        A caller cancelled halfway through a call (a job canceled, the bot shutting down)
        would otherwise abandon a connection in the middle of a transaction: the write is
        lost, and the driver's cleanup can hang. Shielded, the call completes (or rolls back)
        on its own, and :meth:`close` waits for it."""
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return asyncio.shield(task)

    async def close(self) -> None:
        """Let shielded calls in flight finish, then close."""
        if self.closed:
            return
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=CLOSE_TIMEOUT)
        self.closed = True
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=CLOSE_TIMEOUT)
        if self.group_writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.group_writer.close)
        await self.engine.dispose()

    def insert(self, table: sa.Table) -> Any:
        """Dialect insert construct with ``on_conflict_do_*`` (same semantics on both)."""
        if self.dialect == "postgresql":
            return pg_dialect.insert(table)
        return sqlite_dialect.insert(table)

    @contextlib.asynccontextmanager
    async def tx(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """One short transaction; committed on success, rolled back on error."""
        if self.closed:
            raise RuntimeError("store is closed")
        lock = self._write_lock if (write or self._serialize_all) else None
        async with lock or contextlib.nullcontext():
            engine = self._write_engine if write else self.engine
            async with engine.connect() as conn, conn.begin():
                yield conn

    async def write(self, op: WriteOp) -> Any:
        """Run one write statement in a transaction and return its result once committed.

        On a SQLite file, writes that arrive while others are being committed are
        committed together in the next transaction (group commit), and a whole group runs
        in one call to a writer thread: SQLite has one writer at a time, and with a
        transaction (and a trip between the event loop and the driver's thread) per
        statement, hundreds of jobs' writes would wait one behind the other. If a grouped
        write fails, the group is rolled back and each of its writes retried alone, so one
        failure never takes the others with it."""
        if self.group_writer is None:
            async with self.tx(write=True) as conn:
                return op.extract(await conn.execute(op.stmt, op.params))
        if self.closed:
            raise RuntimeError("store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._write_queue.append((op, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="store-writer")
        return await future

    async def _write_groups(self) -> None:
        assert self.group_writer is not None and self._write_lock is not None
        loop = asyncio.get_running_loop()
        while self._write_queue:
            group = self._write_queue[:WRITE_GROUP_MAX]
            del self._write_queue[: len(group)]
            ops = [op for op, _ in group]
            try:
                async with self._write_lock:
                    outcomes = await asyncio.shield(
                        loop.run_in_executor(self.group_writer.thread, self.group_writer.run, ops)
                    )
            except BaseException as exc:
                for _, future in (*group, *self._write_queue):
                    if isinstance(exc, Exception):
                        _settle(future, error=exc)
                    else:
                        future.cancel()
                self._write_queue.clear()
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), (result, error) in zip(group, outcomes, strict=True):
                _settle(future, result, error=error)


def _settle(
    future: asyncio.Future[Any], result: Any = None, *, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _HasDatabase(Protocol):
    _db: Database


S = TypeVar("S", bound=_HasDatabase)

_SHIELDED: Final = "__store_shielded__"


def shielded(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Make a store method finish even if its caller is cancelled (see :meth:`Database.shield`)."""

    @functools.wraps(method)
    async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._db.shield(method(self, *args, **kwargs))

    setattr(wrapper, _SHIELDED, True)
    return wrapper


def is_shielded(method: object) -> bool:
    return getattr(method, _SHIELDED, False) is True


async def open_database(url: URL) -> Database:
    """Engine and :class:`Database` for a normalised URL (see ``normalize_database_url``)."""
    if url.get_backend_name() == "sqlite":
        prepare_sqlite_path(url)
        memory = is_memory_sqlite(url)
        engine = create_async_engine(
            url,
            # One shared connection keeps an in-memory database alive; all work is serialised
            # on it (see Database.tx). Files get a small pool: readers run in parallel in WAL.
            poolclass=StaticPool if memory else AsyncAdaptedQueuePool,
            # No overflow: connections past the pool would be opened and closed per use,
            # each costing a thread and the PRAGMAs.
            **({} if memory else {"pool_size": 16, "max_overflow": 0}),
        )
        install_sqlite_hooks(engine.sync_engine)
        db = Database(engine, serialize_all=memory)
        if not memory:
            try:
                await enable_wal(engine)
            except BaseException:
                await db.close()
                raise
            db.group_writer = GroupWriter(url)
        return db
    if importlib.util.find_spec("asyncpg") is None:
        raise RuntimeError("DATABASE_URL points at PostgreSQL, which needs the asyncpg package")
    engine = create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
    return Database(engine, serialize_all=False)
