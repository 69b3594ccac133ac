"""The schema, as the ordered steps that built it, and the runner that applies pending steps.

Each step says its change once, through :class:`Evolution`: the change is made to a
description of the schema (SQLAlchemy ``MetaData``) and, when the step runs against a
database, the matching DDL is derived from that description. The current schema
(:mod:`services.store.schema`) is what all steps give when replayed on an empty description,
so it is never written out a second time. Steps are append-only: a released step is never
edited, a change of mind is a new step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.store.columns import UTCDateTime, utc_now

if TYPE_CHECKING:
    from services.store.engine import Database

log = logging.getLogger(__name__)

NAMING: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}
#: Key of the PostgreSQL advisory lock taken while migrating (any constant 64-bit integer).
_PG_MIGRATION_LOCK_KEY: Final = 0x52455049_4D494752
#: The first SQLite version with ``ALTER TABLE … DROP COLUMN``.
SQLITE_DROP_COLUMN: Final = (3, 35, 0)

MIGRATIONS_TABLE: Final = sa.Table(
    "schema_migrations",
    sa.MetaData(naming_convention=NAMING),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)


class Evolution:
    """One step's changes, made to ``metadata`` and, if a connection is given, to the database."""

    def __init__(self, metadata: sa.MetaData, conn: sa.Connection | None) -> None:
        self.metadata = metadata
        self._conn = conn

    def create_table(self, name: str, *items: sa.SchemaItem) -> None:
        """A new table with its columns, constraints and indexes."""
        table = sa.Table(name, self.metadata, *items)
        if self._conn is not None:
            table.create(self._conn, checkfirst=False)

    def add_index(self, table: str, *columns: str) -> None:
        t = self.metadata.tables[table]
        index = sa.Index(None, *(t.c[name] for name in columns))
        if self._conn is not None:
            index.create(self._conn)

    def add_column(self, table: str, column: sa.Column[Any]) -> None:
        """A new column; it must be nullable or have a server default (rows exist)."""
        t = self.metadata.tables[table]
        t.append_column(column)
        if self._conn is not None:
            ddl = sa.schema.CreateColumn(column).compile(dialect=self._conn.dialect)
            self._ddl(f"ALTER TABLE {self._quote(t.name)} ADD COLUMN {ddl}")

    def drop_columns(self, table: str, *names: str) -> None:
        """Columns that go; none may be part of an index or a constraint."""
        t = self.metadata.tables[table]
        for name in names:
            column = t.c[name]
            constrained = [*t.indexes, *t.constraints]
            if any(c.columns.contains_column(column) for c in constrained):
                raise ValueError(f"{table}.{name} is indexed or constrained; drop that first")
            # A Table has no public way to forget a column; the schema test compares the
            # result with the database.
            t._columns.remove(column)
        if self._conn is None:
            return
        dialect = self._conn.dialect
        if dialect.name == "sqlite" and (dialect.server_version_info or ()) < SQLITE_DROP_COLUMN:
            self._rebuild_sqlite_table(t)
            return
        for name in names:
            self._ddl(f"ALTER TABLE {self._quote(t.name)} DROP COLUMN {self._quote(name)}")

    def _rebuild_sqlite_table(self, table: sa.Table) -> None:
        """Give a table the shape ``table`` describes by copying its rows into a new one.

        For SQLite versions without DROP COLUMN. Assumes no view, trigger or foreign key
        refers to the table (none does in this schema)."""
        assert self._conn is not None
        old = f"_old_{table.name}"
        for index in table.indexes:
            self._conn.execute(sa.schema.DropIndex(index))
        self._ddl(f"ALTER TABLE {self._quote(table.name)} RENAME TO {self._quote(old)}")
        table.create(self._conn, checkfirst=False)
        names = [c.name for c in table.columns]
        rows = sa.select(*(sa.column(n) for n in names)).select_from(sa.table(old))
        self._conn.execute(sa.insert(table).from_select(names, rows))
        self._ddl(f"DROP TABLE {self._quote(old)}")

    def _ddl(self, statement: str) -> None:
        assert self._conn is not None
        self._conn.execute(sa.DDL(statement.replace("%", "%%")))

    def _quote(self, name: str) -> str:
        assert self._conn is not None
        return self._conn.dialect.identifier_preparer.quote(name)


# --------------------------------------------------------------------------------------------
# The steps


def _initial(s: Evolution) -> None:
    s.create_table(
        "meta",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    s.create_table(
        "generations",
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
    s.create_table(
        "trainings",
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
    s.create_table(
        "trained_models",
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
    s.create_table(
        "webhook_events",
        sa.Column("webhook_id", sa.String(200), primary_key=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        # Pruning deletes by age.
        sa.Index(None, "received_at"),
    )


def _generations_by_day(s: Evolution) -> None:
    """The day's generations of every user are counted at once (daily quotas)."""
    s.add_index("generations", "created_at")


def _generation_owner(s: Evolution) -> None:
    """The instance that runs a generation, so that restart recovery of one process never
    takes another live process's jobs (several processes, one database)."""
    s.add_column("generations", sa.Column("owner", sa.String(64), nullable=True))


def _drop_message_columns(s: Evolution) -> None:
    """Nothing ever wrote them: progress is shown in the interaction's own response, and
    a result posted to the channel is recorded in ``result_message_id``."""
    s.drop_columns("generations", "message_id", "channel_message_id")


def _shared_jobs(s: Evolution) -> None:
    """Admission, the queue and job ownership live in the store, for any number of processes.

    ``seq`` orders the queue (given under the admission lock); a job belongs to the process
    in ``lease_owner`` until ``lease_expires_at``, which that process keeps renewing, so a
    dead process's jobs are taken over by another once its leases expire; a Cancel of a
    running job is recorded in ``cancel_requested_at`` for the process that runs it. The
    instance name (``owner``) is retired. ``processes`` lists live processes, so a
    restarted process can tell at once that a lease holder on its own machine is gone."""
    s.add_column("generations", sa.Column("seq", sa.BigInteger, nullable=True))
    s.add_column("generations", sa.Column("lease_owner", sa.String(64), nullable=True))
    s.add_column("generations", sa.Column("lease_expires_at", UTCDateTime, nullable=True))
    s.add_column("generations", sa.Column("cancel_requested_at", UTCDateTime, nullable=True))
    s.drop_columns("generations", "owner")
    s.add_index("generations", "status", "seq")
    s.add_index("generations", "lease_owner")
    s.add_column("trainings", sa.Column("lease_owner", sa.String(64), nullable=True))
    s.add_column("trainings", sa.Column("lease_expires_at", UTCDateTime, nullable=True))
    s.create_table(
        "processes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host_key", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Index(None, "host_key"),
    )


def _admin(s: Evolution) -> None:
    """What the people who run the bot need: per-server settings and who changed them,
    what each job cost (estimated from a price table), budget notices sent once, and
    the HTTP API's keys (their hash only).

    ``cost_reserved`` is a job's estimated cost, written when it is admitted: a budget
    counts it until the job ends and ``cost_usd`` (from Replicate's ``predict_time``
    or the image count) replaces it, so a burst of admissions cannot overspend."""
    s.add_column("generations", sa.Column("image_count", sa.Integer, nullable=True))
    s.add_column("generations", sa.Column("cost_usd", sa.Float, nullable=True))
    s.add_column("generations", sa.Column("cost_reserved", sa.Float, nullable=True))
    s.add_index("generations", "guild_id", "created_at")
    s.add_column("trainings", sa.Column("predict_time", sa.Float, nullable=True))
    s.add_column("trainings", sa.Column("cost_usd", sa.Float, nullable=True))
    s.add_column("trainings", sa.Column("cost_reserved", sa.Float, nullable=True))
    s.add_index("trainings", "created_at")
    s.create_table(
        "guild_settings",
        sa.Column("guild_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("overrides", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    s.create_table(
        "settings_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("old_value", sa.JSON, nullable=True),
        sa.Column("new_value", sa.JSON, nullable=True),
        sa.Column("user_id", sa.BigInteger, nullable=True),
        sa.Column("changed_at", UTCDateTime, nullable=False),
        sa.Index(None, "guild_id", "changed_at"),
    )
    s.create_table(
        "budget_notices",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("sent_at", UTCDateTime, nullable=False),
    )
    active = sa.text("revoked_at IS NULL")
    s.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("per_day", sa.Integer, nullable=True),
        sa.Column("cooldown", sa.Float, nullable=True),
        sa.Column("budget_usd", sa.Float, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        # A name is taken by one active key at a time: a revoked key's name can be reused.
        sa.Index(None, "name", unique=True, sqlite_where=active, postgresql_where=active),
    )


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    change: Callable[[Evolution], None]

    def apply(self, conn: sa.Connection) -> None:
        """Run the step's DDL (inside the caller's transaction)."""
        self.change(Evolution(schema_at(self.version - 1), conn))


#: Append-only, in order. The runner applies each step once.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "initial schema", _initial),
    Migration(2, "index generations by creation time", _generations_by_day),
    Migration(3, "generations remember their instance", _generation_owner),
    Migration(4, "generations drop the message columns never written", _drop_message_columns),
    Migration(5, "admission, queue and leases of jobs shared by every process", _shared_jobs),
    Migration(6, "server settings, job costs, budget notices and API keys", _admin),
)
LATEST_SCHEMA_VERSION: Final = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def schema_at(version: int) -> sa.MetaData:
    """The schema as it is after step ``version`` (0: empty)."""
    md = sa.MetaData(naming_convention=NAMING)
    for step in MIGRATIONS[:version]:
        step.change(Evolution(md, None))
    return md


# --------------------------------------------------------------------------------------------
# The runner


async def migrate(db: Database, *, target: int = LATEST_SCHEMA_VERSION) -> int:
    """Apply pending steps up to ``target``, each in its own transaction; returns the
    database's version.

    Safe when several processes open the same database at once: each step is re-checked
    under a lock (SQLite's write lock, PostgreSQL's advisory lock) before it runs.
    """
    async with db.tx(write=True) as conn:
        await _lock_schema(db, conn)
        await conn.run_sync(lambda c: MIGRATIONS_TABLE.create(c, checkfirst=True))
    async with db.tx() as conn:
        applied = set((await conn.scalars(sa.select(MIGRATIONS_TABLE.c.version))).all())

    for step in MIGRATIONS[:target]:
        if step.version in applied:
            continue
        async with db.tx(write=True) as conn:
            # Re-check under the lock: another process may have applied it meanwhile.
            await _lock_schema(db, conn)
            done = await conn.scalar(
                sa.select(MIGRATIONS_TABLE.c.version).where(
                    MIGRATIONS_TABLE.c.version == step.version
                )
            )
            if done is None:
                await conn.run_sync(step.apply)
                await conn.execute(
                    sa.insert(MIGRATIONS_TABLE).values(
                        version=step.version, description=step.description, applied_at=utc_now()
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
    return newest


async def _lock_schema(db: Database, conn: AsyncConnection) -> None:
    # SQLite: BEGIN IMMEDIATE already excludes other writers. PostgreSQL: transaction-scoped
    # advisory lock, released at commit.
    if db.dialect == "postgresql":
        await conn.execute(
            sa.select(
                sa.func.pg_advisory_xact_lock(sa.literal(_PG_MIGRATION_LOCK_KEY, sa.BigInteger))
            )
        )
