"""Persistent state of the bot and the HTTP API: the only module that contains SQL.

Everything that must survive a crash lives here (generation and training jobs, trained models,
webhook ids already processed, small key/value state), so that a process killed at any moment
can resume from the database alone.

Backends
    SQLite (``sqlite+aiosqlite``) is the embedded default; PostgreSQL (``postgresql+asyncpg``)
    is meant for several processes or shards sharing one database. Only SQLAlchemy Core
    constructs are used. The two dialect-specific spots are the ``INSERT … ON CONFLICT`` upserts
    (both dialects implement them with the same semantics) and the advisory lock that serialises
    migrations on PostgreSQL.

Exactly-once
    State changes that must happen once ("send the training notification", "move the job from
    queued to running") are single ``UPDATE … WHERE <condition>`` statements whose rowcount says
    whether this caller won. They are safe across coroutines, processes and hosts.

Times
    All datetimes go in and come out timezone-aware in UTC. Naive datetimes are rejected: a naive
    value is ambiguous and would be stored wrongly without anyone noticing.

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
import inspect
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, StaticPool

log = logging.getLogger(__name__)

__all__ = [
    "ACTIVE_GENERATION_STATUSES",
    "ACTIVE_TRAINING_STATUSES",
    "GENERATION_STATUSES",
    "LATEST_SCHEMA_VERSION",
    "SOURCES",
    "TRAINING_STATUSES",
    "Generation",
    "NewGeneration",
    "NewTraining",
    "Store",
    "TrainedModel",
    "Training",
    "normalize_database_url",
    "open_store",
]

GenerationStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TrainingStatus = Literal["starting", "processing", "succeeded", "failed", "canceled"]
Source = Literal["discord", "api"]

GENERATION_STATUSES: Final = frozenset({"queued", "running", "succeeded", "failed", "canceled"})
ACTIVE_GENERATION_STATUSES: Final = ("queued", "running")
TRAINING_STATUSES: Final = frozenset({"starting", "processing", "succeeded", "failed", "canceled"})
ACTIVE_TRAINING_STATUSES: Final = ("starting", "processing")
SOURCES: Final = frozenset({"discord", "api"})

#: How long a SQLite connection waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
#: Key of the PostgreSQL advisory lock taken while migrating (any constant 64-bit integer).
_PG_MIGRATION_LOCK_KEY: Final = 0x52455049_4D494752
#: Execution option read by the SQLite ``begin`` hook: ``DEFERRED`` or ``IMMEDIATE``.
_BEGIN_OPTION: Final = "store_sqlite_begin"


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    """12 url-safe characters (72 random bits): fits a Discord custom_id beside a prefix."""
    return secrets.token_urlsafe(9)


def _new_nonce() -> str:
    """20 hex characters: a Discord message nonce may have at most 25."""
    return secrets.token_hex(10)


# --------------------------------------------------------------------------------------------
# Column types


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no datetime type, so values are stored as
    UTC text with a fixed width (``YYYY-MM-DD HH:MM:SS.ffffff``); comparing those strings
    compares the instants, which keeps range queries correct.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, kw_only=True, slots=True)
class NewGeneration:
    """A generation request to persist. ``id`` and ``created_at`` are filled in if omitted."""

    user_key: str
    prompt: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    user_id: int | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    interaction_id: int | None = None
    message_id: int | None = None
    source: Source = "discord"
    status: GenerationStatus = "queued"
    id: str | None = None
    created_at: datetime | None = None
    #: The process (``INSTANCE_ID``) that runs it; only that instance recovers it.
    owner: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Generation:
    id: str
    user_key: str
    user_id: int | None
    guild_id: int | None
    channel_id: int | None
    prompt: str
    model: str
    params: dict[str, Any]
    status: GenerationStatus
    error: str | None
    prediction_id: str | None
    seed: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    predict_time: float | None
    interaction_id: int | None
    #: Progress message.
    message_id: int | None
    channel_message_id: int | None
    result_message_id: int | None
    source: Source
    owner: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NewTraining:
    """A training to persist. ``id``, ``notice_nonce`` and ``created_at`` are generated if omitted.

    ``training_id`` (Replicate's id) is usually unknown yet: the row is written before the
    training is created on Replicate, so a crash in between leaves a trace to recover from.
    ``params`` holds the remaining inputs needed to (re)create the training.
    """

    user_key: str
    model_owner: str
    model_name: str
    trigger_word: str
    steps: int
    user_id: int | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    training_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    status: TrainingStatus = "starting"
    total_steps: int | None = None
    status_message_id: int | None = None
    source: Source = "discord"
    id: str | None = None
    notice_nonce: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Training:
    id: str
    training_id: str | None
    user_key: str
    user_id: int | None
    guild_id: int | None
    channel_id: int | None
    model_owner: str
    model_name: str
    trigger_word: str
    steps: int
    params: dict[str, Any]
    status: TrainingStatus
    step: int | None
    total_steps: int | None
    version: str | None
    weights: str | None
    error: str | None
    status_message_id: int | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    notified_at: datetime | None
    updated_at: datetime
    notice_nonce: str
    last_webhook_at: datetime | None
    last_polled_at: datetime | None
    last_status_edit_at: datetime | None
    source: Source

    @property
    def model_ref(self) -> str:
        return f"{self.model_owner}/{self.model_name}"


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainedModel:
    owner: str
    name: str
    guild_id: int | None
    creator_key: str
    trigger_word: str
    latest_version: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def ref(self) -> str:
        """``owner/name``."""
        return f"{self.owner}/{self.name}"

    @property
    def version_ref(self) -> str | None:
        """``owner/name:version`` of the latest version, if there is one."""
        return f"{self.ref}:{self.latest_version}" if self.latest_version else None


# --------------------------------------------------------------------------------------------
# Schema

_NAMING: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


def _schema_v1(md: sa.MetaData) -> None:
    """Tables as created by migration 1. Frozen: later changes go into their own steps."""
    sa.Table(
        "meta",
        md,
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    sa.Table(
        "generations",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_key", sa.String(128), nullable=False),
        sa.Column("user_id", sa.BigInteger),
        sa.Column("guild_id", sa.BigInteger),
        sa.Column("channel_id", sa.BigInteger),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("prediction_id", sa.String(128)),
        sa.Column("seed", sa.BigInteger),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("predict_time", sa.Float),
        sa.Column("interaction_id", sa.BigInteger),
        sa.Column("message_id", sa.BigInteger),
        sa.Column("channel_message_id", sa.BigInteger),
        sa.Column("result_message_id", sa.BigInteger),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Index(None, "user_key", "created_at"),
        sa.Index(None, "status"),
        sa.Index(None, "prediction_id"),
    )
    sa.Table(
        "trainings",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("training_id", sa.String(128), unique=True),
        sa.Column("user_key", sa.String(128), nullable=False),
        sa.Column("user_id", sa.BigInteger),
        sa.Column("guild_id", sa.BigInteger),
        sa.Column("channel_id", sa.BigInteger),
        sa.Column("model_owner", sa.String(100), nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("trigger_word", sa.String(100), nullable=False),
        sa.Column("steps", sa.Integer, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer),
        sa.Column("total_steps", sa.Integer),
        sa.Column("version", sa.String(128)),
        sa.Column("weights", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("status_message_id", sa.BigInteger),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("completed_at", UTCDateTime),
        sa.Column("notified_at", UTCDateTime),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("notice_nonce", sa.String(25), nullable=False, unique=True),
        sa.Column("last_webhook_at", UTCDateTime),
        sa.Column("last_polled_at", UTCDateTime),
        sa.Column("last_status_edit_at", UTCDateTime),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Index(None, "user_key", "created_at"),
        sa.Index(None, "guild_id", "status"),
        sa.Index(None, "notified_at"),
    )
    sa.Table(
        "trained_models",
        md,
        sa.Column("owner", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("guild_id", sa.BigInteger),
        sa.Column("creator_key", sa.String(128), nullable=False),
        sa.Column("trigger_word", sa.String(100), nullable=False),
        sa.Column("latest_version", sa.String(128)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Index(None, "guild_id", "updated_at"),
    )
    sa.Table(
        "webhook_events",
        md,
        sa.Column("webhook_id", sa.String(200), primary_key=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Index(None, "received_at"),
    )


def _current_schema() -> sa.MetaData:
    """The schema the queries below are written against (the latest migration's result).

    When a migration step changes the schema, mirror the change here, e.g.
    ``md.tables["generations"].append_column(sa.Column("x", sa.Text))`` — never edit
    ``_schema_v1``, which must keep describing what step 1 created.
    """
    md = sa.MetaData(naming_convention=_NAMING)
    _schema_v1(md)
    _gen_by_day(md.tables["generations"])
    md.tables["generations"].append_column(_gen_owner())
    return md


def _gen_owner() -> sa.Column[Any]:
    """Step 3: the instance that runs a generation, so that restart recovery of one
    process never takes another live process's jobs (several processes, one database)."""
    return sa.Column("owner", sa.String(64), nullable=True)


def _gen_by_day(generations: sa.Table) -> sa.Index:
    """Step 2: the day's generations of every user are counted at once (daily quotas)."""
    return sa.Index(None, generations.c.created_at)


_METADATA: Final = _current_schema()
_meta_t: Final = _METADATA.tables["meta"]
_gen_t: Final = _METADATA.tables["generations"]
_train_t: Final = _METADATA.tables["trainings"]
_model_t: Final = _METADATA.tables["trained_models"]
_webhook_t: Final = _METADATA.tables["webhook_events"]

_migrations_t: Final = sa.Table(
    "schema_migrations",
    sa.MetaData(naming_convention=_NAMING),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)


# --------------------------------------------------------------------------------------------
# Migrations


@dataclass(frozen=True, slots=True)
class _Migration:
    version: int
    description: str
    #: Runs inside the step's transaction on a synchronous connection (via ``run_sync``).
    apply: Callable[[sa.Connection], None]


def _m001_initial(conn: sa.Connection) -> None:
    md = sa.MetaData(naming_convention=_NAMING)
    _schema_v1(md)
    md.create_all(conn)


def _m002_generations_by_day(conn: sa.Connection) -> None:
    md = sa.MetaData(naming_convention=_NAMING)
    _schema_v1(md)
    _gen_by_day(md.tables["generations"]).create(conn)


def _m003_generation_owner(conn: sa.Connection) -> None:
    column = _gen_owner()
    ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE generations ADD COLUMN {ddl}")


#: Append-only. Steps must be written so that they only ever run once (the runner guarantees it).
MIGRATIONS: Final[tuple[_Migration, ...]] = (
    _Migration(1, "initial schema", _m001_initial),
    _Migration(2, "index generations by creation time", _m002_generations_by_day),
    _Migration(3, "generations remember their instance", _m003_generation_owner),
)
LATEST_SCHEMA_VERSION: Final = MIGRATIONS[-1].version


# --------------------------------------------------------------------------------------------
# URL handling


def normalize_database_url(database_url: str) -> URL:
    """Turn a DATABASE_URL into an async SQLAlchemy URL.

    Accepted: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``sqlite://`` or
    ``:memory:`` (in-memory), ``sqlite+aiosqlite://…``, ``postgresql://…`` / ``postgres://…`` /
    ``postgresql+asyncpg://…``. A ``sslmode`` query parameter is translated for asyncpg.
    """
    raw = (database_url or "").strip()
    if raw == ":memory:":
        raw = "sqlite://"
    try:
        url = make_url(raw)
    except sa_exc.ArgumentError as e:
        raise ValueError(
            "DATABASE_URL is not a valid database URL; expected e.g. "
            "'sqlite:///data/bot.sqlite3' or 'postgresql://user:pass@host/db'"
        ) from e

    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "aiosqlite", "pysqlite"):
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "asyncpg"):
        url = url.set(drivername="postgresql+asyncpg")
        if "sslmode" in url.query:
            query = dict(url.query)
            query.setdefault("ssl", query.pop("sslmode"))
            url = url.set(query=query)
        return url
    raise ValueError(
        f"DATABASE_URL has an unsupported scheme {url.drivername!r}; use 'sqlite:///path' "
        "or 'postgresql://…' (driver asyncpg)"
    )


def _is_memory_sqlite(url: URL) -> bool:
    return (url.database or "") in ("", ":memory:") or url.query.get("mode") == "memory"


def _prepare_sqlite_path(url: URL) -> None:
    """Create the folder of a SQLite file (relative paths are relative to the working dir)."""
    db = url.database or ""
    if _is_memory_sqlite(url) or db.startswith("file:"):
        return
    Path(db).parent.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------
# Store


async def open_store(database_url: str) -> Store:
    """Connect, apply pending migrations and return a ready :class:`Store`.

    Raises ``ValueError`` for a malformed or unsupported DATABASE_URL.
    """
    url = normalize_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        _prepare_sqlite_path(url)
        memory = _is_memory_sqlite(url)
        engine = create_async_engine(
            url,
            # One shared connection keeps an in-memory database alive; all work is serialised
            # on it (see Store._tx). Files get a small pool: readers run in parallel in WAL.
            poolclass=StaticPool if memory else AsyncAdaptedQueuePool,
            # No overflow: connections past the pool would be opened and closed per use,
            # each costing a thread and the PRAGMAs.
            **({} if memory else {"pool_size": 16, "max_overflow": 0}),
        )
        _install_sqlite_hooks(engine.sync_engine)
        store = Store(engine, serialize_all=memory)
        if not memory:
            try:
                await _enable_wal(engine)
            except BaseException:
                await store.close()
                raise
            store._group_writer = _GroupWriter(url)
    else:
        if importlib.util.find_spec("asyncpg") is None:
            raise RuntimeError("DATABASE_URL points at PostgreSQL, which needs the asyncpg package")
        engine = create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
        store = Store(engine, serialize_all=False)
    try:
        await store._migrate()
    except BaseException:
        await store.close()
        raise
    log.info(
        "Store open (%s, schema version %d)",
        url.render_as_string(hide_password=True),
        store.schema_version,
    )
    return store


async def _enable_wal(engine: AsyncEngine) -> None:
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
                plain = await conn.execution_options(**{_BEGIN_OPTION: "NONE"})
                mode = (await plain.exec_driver_sql("PRAGMA journal_mode = WAL")).scalar()
                if str(mode).lower() != "wal":
                    log.warning("SQLite kept journal mode %s instead of WAL", mode)
                return
        except sa_exc.OperationalError as exc:
            if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def _install_sqlite_hooks(engine: sa.Engine) -> None:
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
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        if mode == "NONE":
            return
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"bad SQLite BEGIN mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


_GEN_UPDATABLE: Final = frozenset(c.name for c in _gen_t.columns) - {
    "id",
    "created_at",
    "updated_at",
}
_TRAIN_UPDATABLE: Final = frozenset(c.name for c in _train_t.columns) - {
    "id",
    "created_at",
    "updated_at",
    "notice_nonce",
}


def _require_aware(**values: Any) -> None:
    """Reject naive datetimes before they reach SQLAlchemy (which would wrap the error)."""
    for name, value in values.items():
        if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(f"{name} must be a timezone-aware datetime, e.g. datetime.now(UTC)")


def _checked_fields(
    fields_: Mapping[str, Any], allowed: frozenset[str], statuses: frozenset[str], what: str
) -> dict[str, Any]:
    unknown = set(fields_) - allowed
    if unknown:
        raise TypeError(f"unknown {what} field(s): {', '.join(sorted(unknown))}")
    if "status" in fields_ and fields_["status"] not in statuses:
        raise ValueError(f"invalid {what} status {fields_['status']!r}")
    _require_aware(**fields_)
    return dict(fields_)


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


CLOSE_TIMEOUT: Final = 10.0
WRITE_GROUP_MAX: Final = 200


@functools.cache
def _update_by_id_stmt(table: sa.Table) -> Any:
    return sa.update(table).where(table.c.id == sa.bindparam("_row_id")).returning(*table.c)


@functools.cache
def _insert_stmt(table: sa.Table) -> Any:
    return sa.insert(table).returning(*table.c)


@functools.cache
def _get_by_id_stmt(table: sa.Table) -> Any:
    return sa.select(table).where(table.c.id == sa.bindparam("_row_id"))


def _settle(
    future: asyncio.Future[Any], result: Any = None, *, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _finish_even_if_cancelled(
    method: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    """Run a store call as its own task and shield it from the caller's cancellation.

    A caller cancelled halfway through a call (a job canceled, the bot shutting down)
    would otherwise abandon a connection in the middle of a transaction: the write is
    lost, and the driver's cleanup can hang. Shielded, the call completes (or rolls back)
    on its own, and :meth:`Store.close` waits for it."""

    @functools.wraps(method)
    async def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        task = asyncio.ensure_future(method(self, *args, **kwargs))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    return wrapper


@dataclass(frozen=True, slots=True)
class _WriteOp:
    """One write statement, its parameters, and what the caller wants back."""

    stmt: Any
    params: dict[str, Any] | None
    result: Literal["rowcount", "first", "one"]

    def extract(self, result: sa.CursorResult[Any]) -> Any:
        if self.result == "rowcount":
            return result.rowcount > 0
        if self.result == "first":
            return result.first()
        return result.one()


class _GroupWriter:
    """Runs groups of writes on a SQLite file in one thread of its own, with the
    standard synchronous driver: a group costs one trip from the event loop, however
    many statements it holds (the asyncio driver makes one per statement)."""

    def __init__(self, url: URL) -> None:
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        engine = sa.create_engine(
            url.set(drivername="sqlite+pysqlite"),
            poolclass=sa.pool.SingletonThreadPool,
            pool_size=1,
        )
        _install_sqlite_hooks(engine)
        self._engine = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})

    def run(self, ops: list[_WriteOp]) -> list[tuple[Any, Exception | None]]:
        """Each op's result or error: all in one transaction, or, if that fails, each
        in a transaction of its own."""
        try:
            with self._engine.begin() as conn:
                return [(op.extract(conn.execute(op.stmt, op.params)), None) for op in ops]
        except Exception as exc:
            if len(ops) == 1:
                return [(None, exc)]
        outcomes: list[tuple[Any, Exception | None]] = []
        for op in ops:
            try:
                with self._engine.begin() as conn:
                    outcomes.append((op.extract(conn.execute(op.stmt, op.params)), None))
            except Exception as exc:
                outcomes.append((None, exc))
        return outcomes

    def close(self) -> None:
        self.thread.submit(self._engine.engine.dispose).result()
        self.thread.shutdown(wait=True)


class Store:
    """Async access to the database. Create with :func:`open_store`; safe for many coroutines."""

    schema_version: int

    def __init__(self, engine: AsyncEngine, *, serialize_all: bool) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._is_sqlite = self._dialect == "sqlite"
        # Connections from this engine begin with BEGIN IMMEDIATE on SQLite (write lock up front).
        self._write_engine = (
            engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"}) if self._is_sqlite else engine
        )
        # SQLite allows one writer at a time; queueing here is cheaper than SQLite's busy loop.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self._is_sqlite else None
        self._serialize_all = serialize_all
        self._closed = False
        self._inflight: set[asyncio.Task[Any]] = set()
        self._write_queue: list[tuple[_WriteOp, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._group_writer: _GroupWriter | None = None
        self.schema_version = 0

    # -- infrastructure ----------------------------------------------------------------------

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Let calls in flight finish (see :func:`_finish_even_if_cancelled`), then close."""
        if self._closed:
            return
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=CLOSE_TIMEOUT)
        self._closed = True
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=CLOSE_TIMEOUT)
        if self._group_writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._group_writer.close)
        await self._engine.dispose()

    async def ping(self) -> bool:
        """True if the database answers a trivial query."""
        if self._closed:
            return False
        try:
            async with self._tx() as conn:
                return (await conn.scalar(sa.select(1))) == 1
        except Exception:
            log.warning("Database ping failed", exc_info=True)
            return False

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """One short transaction; committed on success, rolled back on error."""
        if self._closed:
            raise RuntimeError("store is closed")
        lock = self._write_lock if (write or self._serialize_all) else None
        async with lock or contextlib.nullcontext():
            engine = self._write_engine if write else self._engine
            async with engine.connect() as conn, conn.begin():
                yield conn

    async def _write(self, op: _WriteOp) -> Any:
        """Run one write statement in a transaction and return its result once committed.

        On a SQLite file, writes that arrive while others are being committed are
        committed together in the next transaction (group commit), and a whole group runs
        in one call to a writer thread: SQLite has one writer at a time, and with a
        transaction (and a trip between the event loop and the driver's thread) per
        statement, hundreds of jobs' writes would wait one behind the other. If a grouped
        write fails, the group is rolled back and each of its writes retried alone, so one
        failure never takes the others with it."""
        if self._group_writer is None:
            async with self._tx(write=True) as conn:
                return op.extract(await conn.execute(op.stmt, op.params))
        if self._closed:
            raise RuntimeError("store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._write_queue.append((op, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="store-writer")
        return await future

    async def _write_groups(self) -> None:
        assert self._group_writer is not None and self._write_lock is not None
        loop = asyncio.get_running_loop()
        while self._write_queue:
            group = self._write_queue[:WRITE_GROUP_MAX]
            del self._write_queue[: len(group)]
            ops = [op for op, _ in group]
            try:
                async with self._write_lock:
                    outcomes = await asyncio.shield(
                        loop.run_in_executor(self._group_writer.thread, self._group_writer.run, ops)
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

    def _insert(self, table: sa.Table) -> Any:
        """Dialect insert construct with ``on_conflict_do_*`` (same semantics on both)."""
        if self._dialect == "postgresql":
            return pg_dialect.insert(table)
        return sqlite_dialect.insert(table)

    async def _migrate(self) -> None:
        async with self._tx(write=True) as conn:
            await self._lock_schema(conn)
            await conn.run_sync(lambda c: _migrations_t.create(c, checkfirst=True))
        async with self._tx() as conn:
            applied = set((await conn.scalars(sa.select(_migrations_t.c.version))).all())

        for step in MIGRATIONS:
            if step.version in applied:
                continue
            async with self._tx(write=True) as conn:
                # Re-check under the lock: another process may have applied it meanwhile.
                await self._lock_schema(conn)
                done = await conn.scalar(
                    sa.select(_migrations_t.c.version).where(
                        _migrations_t.c.version == step.version
                    )
                )
                if done is None:
                    await conn.run_sync(step.apply)
                    await conn.execute(
                        sa.insert(_migrations_t).values(
                            version=step.version, description=step.description, applied_at=_now()
                        )
                    )
                    log.info("Applied schema migration %d (%s)", step.version, step.description)
            applied.add(step.version)

        newest = max(applied, default=0)
        if newest > LATEST_SCHEMA_VERSION:
            log.warning(
                "Database schema version %d is newer than this code knows (%d)",
                newest,
                LATEST_SCHEMA_VERSION,
            )
        self.schema_version = newest

    async def _lock_schema(self, conn: AsyncConnection) -> None:
        # SQLite: BEGIN IMMEDIATE already excludes other writers. PostgreSQL: transaction-scoped
        # advisory lock, released at commit.
        if self._dialect == "postgresql":
            await conn.execute(
                sa.select(
                    sa.func.pg_advisory_xact_lock(sa.literal(_PG_MIGRATION_LOCK_KEY, sa.BigInteger))
                )
            )

    # -- meta --------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with self._tx() as conn:
            return await conn.scalar(sa.select(_meta_t.c.value).where(_meta_t.c.key == key))

    async def set_meta(self, key: str, value: str) -> None:
        stmt = self._insert(_meta_t).values(key=key, value=value, updated_at=_now())
        stmt = stmt.on_conflict_do_update(
            index_elements=[_meta_t.c.key],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        )
        async with self._tx(write=True) as conn:
            await conn.execute(stmt)

    # -- generations -------------------------------------------------------------------------

    async def create_generation(self, g: NewGeneration) -> Generation:
        if g.status not in GENERATION_STATUSES:
            raise ValueError(f"invalid generation status {g.status!r}")
        if g.source not in SOURCES:
            raise ValueError(f"invalid source {g.source!r}")
        _require_aware(created_at=g.created_at)
        now = _now()
        values = {
            "user_key": g.user_key,
            "user_id": g.user_id,
            "guild_id": g.guild_id,
            "channel_id": g.channel_id,
            "prompt": g.prompt,
            "model": g.model,
            "params": dict(g.params),
            "status": g.status,
            "created_at": g.created_at or now,
            "updated_at": now,
            "interaction_id": g.interaction_id,
            "message_id": g.message_id,
            "source": g.source,
            "owner": g.owner,
        }
        return _to_generation(await self._insert_with_id(_gen_t, values, g.id))

    async def get_generation(self, gen_id: str) -> Generation | None:
        async with self._tx() as conn:
            row = (await conn.execute(_get_by_id_stmt(_gen_t), {"_row_id": gen_id})).first()
        return _to_generation(row) if row else None

    async def get_generation_by_prediction_id(self, prediction_id: str) -> Generation | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    sa.select(_gen_t).where(_gen_t.c.prediction_id == prediction_id).limit(1)
                )
            ).first()
        return _to_generation(row) if row else None

    async def update_generation(self, gen_id: str, **fields_: Any) -> bool:
        """Set the given columns. Returns False if there is no such generation."""
        values = _checked_fields(fields_, _GEN_UPDATABLE, GENERATION_STATUSES, "generation")
        return await self._update_by_id(_gen_t, gen_id, values) is not None

    async def set_generation(self, gen_id: str, **fields_: Any) -> Generation | None:
        """Like :meth:`update_generation`, and return the generation as stored (None if
        there is no such generation)."""
        values = _checked_fields(fields_, _GEN_UPDATABLE, GENERATION_STATUSES, "generation")
        row = await self._update_by_id(_gen_t, gen_id, values)
        return _to_generation(row) if row is not None else None

    async def transition_generation(
        self, gen_id: str, *, from_status: Iterable[str], **fields_: Any
    ) -> bool:
        """Update only if the current status is in ``from_status``; True for exactly one caller.

        E.g. ``transition_generation(id, from_status=["queued"], status="running")`` claims a
        queued job for one worker.
        """
        values = _checked_fields(fields_, _GEN_UPDATABLE, GENERATION_STATUSES, "generation")
        cond = sa.and_(_gen_t.c.id == gen_id, _gen_t.c.status.in_(list(from_status)))
        return await self._update(_gen_t, cond, values)

    async def count_generations_by_user(self, since: datetime) -> dict[str, int]:
        """Generations created at or after ``since``, per user_key (users with none are
        left out)."""
        _require_aware(since=since)
        query = (
            sa.select(_gen_t.c.user_key, sa.func.count())
            .where(_gen_t.c.created_at >= since)
            .group_by(_gen_t.c.user_key)
        )
        async with self._tx() as conn:
            return {key: int(n) for key, n in await conn.execute(query)}

    async def unfinished_generations(self, *, owner: str | None = None) -> list[Generation]:
        """Queued or running generations, oldest first (restart recovery); with ``owner``,
        only that instance's (and those recorded before owners were, which have none)."""
        query = sa.select(_gen_t).where(_gen_t.c.status.in_(ACTIVE_GENERATION_STATUSES))
        if owner is not None:
            query = query.where(sa.or_(_gen_t.c.owner == owner, _gen_t.c.owner.is_(None)))
        async with self._tx() as conn:
            rows = await conn.execute(query.order_by(_gen_t.c.created_at, _gen_t.c.id))
            return [_to_generation(r) for r in rows]

    async def recent_generations(
        self, *, user_key: str | None = None, limit: int = 10
    ) -> list[Generation]:
        """Newest first; all users unless ``user_key`` is given."""
        query = sa.select(_gen_t).order_by(_gen_t.c.created_at.desc(), _gen_t.c.id).limit(limit)
        if user_key is not None:
            query = query.where(_gen_t.c.user_key == user_key)
        async with self._tx() as conn:
            return [_to_generation(r) for r in await conn.execute(query)]

    # -- trainings ---------------------------------------------------------------------------

    async def create_training(self, t: NewTraining) -> Training:
        if t.status not in TRAINING_STATUSES:
            raise ValueError(f"invalid training status {t.status!r}")
        if t.source not in SOURCES:
            raise ValueError(f"invalid source {t.source!r}")
        _require_aware(created_at=t.created_at)
        nonce = t.notice_nonce or _new_nonce()
        if len(nonce) > 25:
            raise ValueError("notice_nonce must be at most 25 characters (Discord nonce limit)")
        now = _now()
        values = {
            "training_id": t.training_id,
            "user_key": t.user_key,
            "user_id": t.user_id,
            "guild_id": t.guild_id,
            "channel_id": t.channel_id,
            "model_owner": t.model_owner,
            "model_name": t.model_name,
            "trigger_word": t.trigger_word,
            "steps": t.steps,
            "params": dict(t.params),
            "status": t.status,
            "total_steps": t.total_steps if t.total_steps is not None else t.steps,
            "status_message_id": t.status_message_id,
            "created_at": t.created_at or now,
            "updated_at": now,
            "notice_nonce": nonce,
            "source": t.source,
        }
        return _to_training(await self._insert_with_id(_train_t, values, t.id))

    async def get_training(self, local_id: str) -> Training | None:
        return await self._one_training(_train_t.c.id == local_id)

    async def get_training_by_replicate_id(self, training_id: str) -> Training | None:
        return await self._one_training(_train_t.c.training_id == training_id)

    async def _one_training(self, cond: sa.ColumnElement[bool]) -> Training | None:
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(_train_t).where(cond))).first()
        return _to_training(row) if row else None

    async def update_training(self, local_id: str, **fields_: Any) -> bool:
        """Set the given columns. Returns False if there is no such training.

        Raises ``sqlalchemy.exc.IntegrityError`` if ``training_id`` is already used elsewhere.
        """
        values = _checked_fields(fields_, _TRAIN_UPDATABLE, TRAINING_STATUSES, "training")
        return await self._update_by_id(_train_t, local_id, values) is not None

    async def transition_training(
        self, local_id: str, *, from_status: Iterable[str], **fields_: Any
    ) -> bool:
        """Update only if the current status is in ``from_status``; True for exactly one caller.

        Lets a webhook and a poller race to record the final state without both acting on it.
        """
        values = _checked_fields(fields_, _TRAIN_UPDATABLE, TRAINING_STATUSES, "training")
        cond = sa.and_(_train_t.c.id == local_id, _train_t.c.status.in_(list(from_status)))
        return await self._update(_train_t, cond, values)

    async def unfinished_trainings(self) -> list[Training]:
        """Trainings whose final notification has not been claimed yet, oldest first.

        Includes finished ones: a crash between "succeeded" and the notification must still
        lead to exactly one notification after restart.
        """
        async with self._tx() as conn:
            rows = await conn.execute(
                sa.select(_train_t)
                .where(_train_t.c.notified_at.is_(None))
                .order_by(_train_t.c.created_at, _train_t.c.id)
            )
            return [_to_training(r) for r in rows]

    async def claim_notification(self, local_id: str, now: datetime) -> bool:
        """Atomically set ``notified_at`` if unset. True for exactly one caller, ever."""
        _require_aware(now=now)
        return await self._update(
            _train_t,
            sa.and_(_train_t.c.id == local_id, _train_t.c.notified_at.is_(None)),
            {"notified_at": now},
        )

    async def release_notification(self, local_id: str) -> bool:
        """Undo a claim (e.g. sending failed for good) so a later attempt can claim again."""
        return await self._update(
            _train_t,
            sa.and_(_train_t.c.id == local_id, _train_t.c.notified_at.is_not(None)),
            {"notified_at": None},
        )

    async def claim_status_edit(
        self, local_id: str, now: datetime, min_interval: timedelta
    ) -> bool:
        """Rate limit for progress-message edits shared by all processes.

        Sets ``last_status_edit_at = now`` and returns True only if the previous edit is at
        least ``min_interval`` old (or there was none).
        """
        return await self._claim_interval(
            _train_t.c.last_status_edit_at, local_id, now, min_interval
        )

    async def claim_poll(self, local_id: str, now: datetime, min_interval: timedelta) -> bool:
        """Like :meth:`claim_status_edit` for ``last_polled_at``: one poller per interval."""
        return await self._claim_interval(_train_t.c.last_polled_at, local_id, now, min_interval)

    async def _claim_interval(
        self, column: sa.Column[Any], local_id: str, now: datetime, min_interval: timedelta
    ) -> bool:
        _require_aware(now=now)
        cond = sa.and_(
            _train_t.c.id == local_id,
            sa.or_(column.is_(None), column <= now - min_interval),
        )
        return await self._update(_train_t, cond, {column.name: now})

    async def count_trainings_since(self, user_key: str, since: datetime) -> int:
        """Trainings created by ``user_key`` at or after ``since`` (quota window)."""
        _require_aware(since=since)
        async with self._tx() as conn:
            n = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(_train_t)
                .where(_train_t.c.user_key == user_key, _train_t.c.created_at >= since)
            )
        return int(n or 0)

    async def count_active_trainings(self, guild_id: int | None) -> int:
        """Trainings in ``starting``/``processing`` started in that guild (``None``: in DMs)."""
        scope = (
            _train_t.c.guild_id.is_(None) if guild_id is None else _train_t.c.guild_id == guild_id
        )
        return await self._count_active(scope)

    async def count_active_trainings_total(self) -> int:
        """Trainings in ``starting``/``processing`` anywhere."""
        return await self._count_active(sa.true())

    async def _count_active(self, scope: sa.ColumnElement[bool]) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(_train_t)
            .where(_train_t.c.status.in_(ACTIVE_TRAINING_STATUSES), scope)
        )
        async with self._tx() as conn:
            return int(await conn.scalar(query) or 0)

    async def count_active_trainings_for_user(self, user_key: str) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(_train_t)
            .where(_train_t.c.status.in_(ACTIVE_TRAINING_STATUSES), _train_t.c.user_key == user_key)
        )
        async with self._tx() as conn:
            return int(await conn.scalar(query) or 0)

    async def recent_trainings(
        self, *, guild_id: int | None, user_id: int | None, limit: int = 10
    ) -> list[Training]:
        """Newest first. Each filter left as ``None`` is not applied."""
        query = sa.select(_train_t)
        if guild_id is not None:
            query = query.where(_train_t.c.guild_id == guild_id)
        if user_id is not None:
            query = query.where(_train_t.c.user_id == user_id)
        query = query.order_by(_train_t.c.created_at.desc(), _train_t.c.id).limit(max(0, limit))
        async with self._tx() as conn:
            return [_to_training(r) for r in await conn.execute(query)]

    # -- trained models ----------------------------------------------------------------------

    async def upsert_model(
        self,
        owner: str,
        name: str,
        *,
        guild_id: int | None,
        creator_key: str,
        trigger_word: str,
        latest_version: str | None,
    ) -> None:
        """Insert or update a trained model (owner and name are stored lowercase).

        ``guild_id`` and ``creator_key`` are kept from the first insert: the creator stays the
        owner of record. ``latest_version=None`` keeps the existing version.
        """
        now = _now()
        stmt = self._insert(_model_t).values(
            owner=owner.lower(),
            name=name.lower(),
            guild_id=guild_id,
            creator_key=creator_key,
            trigger_word=trigger_word,
            latest_version=latest_version,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[_model_t.c.owner, _model_t.c.name],
            set_={
                "trigger_word": stmt.excluded.trigger_word,
                "latest_version": sa.func.coalesce(
                    stmt.excluded.latest_version, _model_t.c.latest_version
                ),
                "updated_at": stmt.excluded.updated_at,
            },
        )
        async with self._tx(write=True) as conn:
            await conn.execute(stmt)

    async def get_model(self, owner: str, name: str) -> TrainedModel | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    sa.select(_model_t).where(
                        _model_t.c.owner == owner.lower(), _model_t.c.name == name.lower()
                    )
                )
            ).first()
        return TrainedModel(**row._mapping) if row else None

    async def models_for_guild(
        self, guild_id: int | None, prefix: str = "", limit: int = 25
    ) -> list[TrainedModel]:
        """Models with a version trained in that guild (``None``: trained in DMs), newest first.

        ``prefix`` matches the start of ``name`` or of ``owner/name``, case-insensitively.
        """
        query = sa.select(_model_t).where(_model_t.c.latest_version.is_not(None))
        if guild_id is None:
            query = query.where(_model_t.c.guild_id.is_(None))
        else:
            query = query.where(_model_t.c.guild_id == guild_id)
        prefix = prefix.strip().lower()
        if prefix:
            pattern = _like_prefix(prefix)
            full = _model_t.c.owner + "/" + _model_t.c.name
            query = query.where(
                sa.or_(
                    _model_t.c.name.like(pattern, escape="\\"),
                    full.like(pattern, escape="\\"),
                )
            )
        query = query.order_by(
            _model_t.c.updated_at.desc(), _model_t.c.owner, _model_t.c.name
        ).limit(max(0, limit))
        async with self._tx() as conn:
            return [TrainedModel(**r._mapping) for r in await conn.execute(query)]

    async def find_model_by_version(self, ref: str) -> TrainedModel | None:
        """Model for ``owner/name:version``, ``owner/name`` or a bare version id.

        With ``owner/name:version`` the model is returned even if ``version`` is not its latest
        one (the trigger word belongs to the model).
        """
        ref = ref.strip()
        base, _, version = ref.partition(":")
        if "/" in base:
            owner, _, name = base.partition("/")
            return await self.get_model(owner, name)
        if not ref or version:
            return None
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    sa.select(_model_t).where(_model_t.c.latest_version == ref).limit(1)
                )
            ).first()
        return TrainedModel(**row._mapping) if row else None

    # -- webhooks ----------------------------------------------------------------------------

    async def record_webhook(self, webhook_id: str, received_at: datetime) -> bool:
        """Remember a webhook-id. False if it was recorded before (a redelivery)."""
        _require_aware(received_at=received_at)
        stmt = (
            self._insert(_webhook_t)
            .values(webhook_id=webhook_id, received_at=received_at)
            .on_conflict_do_nothing(index_elements=[_webhook_t.c.webhook_id])
        )
        async with self._tx(write=True) as conn:
            result = await conn.execute(stmt)
            return result.rowcount == 1

    async def prune_webhooks(self, before: datetime) -> int:
        """Forget webhook-ids received before ``before``; returns how many were deleted."""
        _require_aware(before=before)
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                sa.delete(_webhook_t).where(_webhook_t.c.received_at < before)
            )
            return result.rowcount

    # -- helpers -----------------------------------------------------------------------------

    async def _update(
        self, table: sa.Table, cond: sa.ColumnElement[bool], values: dict[str, Any]
    ) -> bool:
        if "updated_at" in table.c:
            values = {**values, "updated_at": _now()}
        stmt = sa.update(table).where(cond).values(**values)
        return bool(await self._write(_WriteOp(stmt, None, "rowcount")))

    async def _update_by_id(
        self, table: sa.Table, row_id: str, values: dict[str, Any]
    ) -> sa.Row[Any] | None:
        """Set ``values`` on one row; the row as stored, or None if there is none.

        The statement is built once per table, so SQLAlchemy's compiled cache is hit
        without building a cache key per call (a hot path: several writes per job)."""
        if "updated_at" in table.c:
            values = {**values, "updated_at": _now()}
        params = {**values, "_row_id": row_id}
        row: sa.Row[Any] | None = await self._write(
            _WriteOp(_update_by_id_stmt(table), params, "first")
        )
        return row

    async def _insert_with_id(
        self, table: sa.Table, values: dict[str, Any], given_id: str | None
    ) -> sa.Row[Any]:
        """Insert with a fresh random id, retrying on the (astronomically rare) id clash;
        returns the row as stored."""
        for _attempt in range(5):
            row_id = given_id or _new_id()
            op = _WriteOp(_insert_stmt(table), {**values, "id": row_id}, "one")
            try:
                row: sa.Row[Any] = await self._write(op)
                return row
            except sa_exc.IntegrityError:
                if given_id is not None or not await self._id_exists(table, row_id):
                    raise
                log.warning("Random id clash in %s, retrying", table.name)
        raise RuntimeError(f"could not allocate a unique id in {table.name}")

    async def _id_exists(self, table: sa.Table, row_id: str) -> bool:
        async with self._tx() as conn:
            return (
                await conn.scalar(sa.select(table.c.id).where(table.c.id == row_id))
            ) is not None


_GEN_FIELDS: Final = frozenset(f.name for f in fields(Generation))
_TRAIN_FIELDS: Final = frozenset(f.name for f in fields(Training))


for _name, _member in list(vars(Store).items()):
    if not _name.startswith("_") and _name != "close" and inspect.iscoroutinefunction(_member):
        setattr(Store, _name, _finish_even_if_cancelled(_member))


def _to_generation(row: sa.Row[Any]) -> Generation:
    data = dict(row._mapping)
    data["params"] = data.get("params") or {}
    return Generation(**data)


def _to_training(row: sa.Row[Any]) -> Training:
    data = dict(row._mapping)
    data["params"] = data.get("params") or {}
    return Training(**data)


# The row-to-record mapping relies on columns and dataclass fields having the same names.
assert {c.name for c in _gen_t.columns} == _GEN_FIELDS, "generations columns != Generation"
assert {c.name for c in _train_t.columns} == _TRAIN_FIELDS, "trainings columns != Training"
assert {c.name for c in _model_t.columns} == {f.name for f in fields(TrainedModel)}
