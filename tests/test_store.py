"""Tests of services.store: one fresh SQLite file per test, no sleeps.

With TEST_POSTGRES_URL set (``scripts/with-postgres`` sets it), the backend-neutral tests run
against PostgreSQL as well; each such test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import string
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError

from services.store import (
    LATEST_SCHEMA_VERSION,
    MIGRATIONS,
    NewGeneration,
    NewTraining,
    Store,
    Training,
    migrations,
    normalize_database_url,
    open_store,
)
from services.store.engine import is_shielded, open_database
from services.store.jobs import AdmitRequest, GenerationLimits
from services.store.migrations import MIGRATIONS_TABLE, migrate, schema_at
from services.store.schema import METADATA, webhooks_table
from services.store.trainings import TrainingLimits
from services.store.usage import Budget
from tests.helpers.databases import BACKENDS, fresh_database
from tests.helpers.store import PostgresCompiler, recent_generations

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
URLSAFE = set(string.ascii_letters + string.digits + "-_")
REPO_ROOT = Path(__file__).resolve().parents[1]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"  # tmp_path is absolute, so this gives sqlite:////…


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(sqlite_url(tmp_path / "bot.sqlite3"))
    yield s
    await s.close()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await open_store(db_url)
    yield s
    await s.close()


def new_gen(**kw: object) -> NewGeneration:
    values: dict[str, object] = {
        "user_key": "discord:1",
        "user_id": 1,
        "guild_id": 10,
        "channel_id": 100,
        "prompt": "a cat",
        "model": "black-forest-labs/flux-schnell",
        "params": {"aspect_ratio": "1:1", "count": 1, "seed": 42},
    }
    values.update(kw)
    return NewGeneration(**values)  # type: ignore[arg-type]


def new_training(**kw: object) -> NewTraining:
    values: dict[str, object] = {
        "user_key": "discord:1",
        "user_id": 1,
        "guild_id": 10,
        "channel_id": 100,
        "model_owner": "alice",
        "model_name": "my-lora",
        "trigger_word": "TOK",
        "steps": 1000,
    }
    values.update(kw)
    return NewTraining(**values)  # type: ignore[arg-type]


async def migration_rows(store: Store) -> list[tuple[int, str]]:
    async with store.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        )
        return [tuple(r) for r in rows]


# -- opening, URLs, migrations ---------------------------------------------------------------


async def test_migrations_applied_once_and_reopen_is_noop(db_url: str) -> None:
    s1 = await open_store(db_url)
    assert s1.schema_version == LATEST_SCHEMA_VERSION == MIGRATIONS[-1].version
    first = await migration_rows(s1)
    assert [v for v, _ in first] == [m.version for m in MIGRATIONS]
    await s1.close()

    s2 = await open_store(db_url)
    try:
        assert s2.schema_version == LATEST_SCHEMA_VERSION
        assert await migration_rows(s2) == first
    finally:
        await s2.close()


async def test_concurrent_opens_migrate_once(db_url: str) -> None:
    stores = await asyncio.gather(*(open_store(db_url) for _ in range(8)))
    try:
        assert {s.schema_version for s in stores} == {LATEST_SCHEMA_VERSION}
        assert len(await migration_rows(stores[0])) == len(MIGRATIONS)
    finally:
        for s in stores:
            await s.close()


async def reflected_schema(store: Store) -> dict[str, tuple[set[str], set[tuple[str, ...]]]]:
    """Per table: the column names, and each index as (name, *columns)."""

    def read(conn: sa.Connection) -> dict[str, tuple[set[str], set[tuple[str, ...]]]]:
        inspector = sa.inspect(conn)
        return {
            table: (
                {c["name"] for c in inspector.get_columns(table)},
                {
                    (str(ix["name"]), *(str(c) for c in ix["column_names"]))
                    for ix in inspector.get_indexes(table)
                    if "duplicates_constraint" not in ix
                },
            )
            for table in inspector.get_table_names()
        }

    async with store.db.engine.connect() as conn:
        return await conn.run_sync(read)


def derived_schema() -> dict[str, tuple[set[str], set[tuple[str, ...]]]]:
    return {
        table.name: (
            {c.name for c in table.columns},
            {(str(ix.name), *(c.name for c in ix.columns)) for ix in table.indexes},
        )
        for table in [*METADATA.sorted_tables, MIGRATIONS_TABLE]
    }


async def test_database_schema_is_the_derived_one(store: Store) -> None:
    """What the migration steps create is what the queries are written against."""
    assert await reflected_schema(store) == derived_schema()
    generations = derived_schema()["generations"][0]
    assert "lease_owner" in generations
    assert not {"owner", "message_id", "channel_message_id"} & set(generations)


@pytest.mark.parametrize("drop_column", [True, False], ids=["alter-table", "sqlite-rebuild"])
async def test_upgrade_from_version_3_keeps_rows(
    db_url: str, drop_column: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database made by steps 1-3 loses the never-written message columns, nothing else."""
    if not drop_column:
        if not db_url.startswith("sqlite"):
            pytest.skip("the table rebuild is for SQLite versions without DROP COLUMN")
        monkeypatch.setattr(migrations, "SQLITE_DROP_COLUMN", (99, 0, 0))
    v3 = schema_at(3).tables["generations"]
    assert {"message_id", "channel_message_id", "owner"} <= set(v3.c.keys())
    old_rows = [
        {
            "id": f"g{i}",
            "user_key": "discord:1",
            "user_id": 1,
            "guild_id": 10,
            "channel_id": 100,
            "prompt": f"prompt {i}",
            "model": "black-forest-labs/flux-schnell",
            "params": {"seed": i, "count": 1},
            "status": "succeeded" if i else "running",
            "prediction_id": f"pred-{i}",
            "seed": 2**40 + i,
            "created_at": T0 + timedelta(seconds=i),
            "started_at": T0,
            "finished_at": T0 + timedelta(minutes=1) if i else None,
            "updated_at": T0,
            "predict_time": 1.5,
            "interaction_id": 2**62 + i,
            "message_id": 7,
            "channel_message_id": 8,
            "result_message_id": 9,
            "source": "discord",
            "owner": "shard-0" if i else None,
        }
        for i in range(3)
    ]
    db = await open_database(normalize_database_url(db_url))
    try:
        assert await migrate(db, target=3) == 3
        async with db.tx(write=True) as conn:
            await conn.execute(sa.insert(v3), old_rows)
    finally:
        await db.close()

    s = await open_store(db_url)
    try:
        assert s.schema_version == LATEST_SCHEMA_VERSION == 6
        assert await reflected_schema(s) == derived_schema()
        for row in old_rows:
            got = await s.get_generation(row["id"])
            assert got is not None
            gone = ("message_id", "channel_message_id", "owner")
            kept = {k: v for k, v in row.items() if k not in gone}
            assert {k: getattr(got, k) for k in kept} == kept
            assert got.lease_owner is None and got.lease_expires_at is None
        assert [g.id for g in await s.unfinished_generations()] == ["g0"]
        assert await s.get_generation_by_prediction_id("pred-2") is not None
        new = await s.create_generation(new_gen())
        assert await s.update_generation(new.id, status="running", result_message_id=1)
    finally:
        await s.close()


def test_migration_steps_compile_for_postgresql() -> None:
    """Every step's DDL, as PostgreSQL would receive it (no server needed)."""
    statements: list[str] = []

    def record(sql: sa.schema.ExecutableDDLElement, *_: object, **__: object) -> None:
        statements.append(" ".join(str(sql.compile(dialect=engine.dialect)).split()))

    engine = sa.create_mock_engine("postgresql+asyncpg://", record)
    for step in MIGRATIONS:
        step.apply(engine)  # type: ignore[arg-type]
    assert statements[0].startswith("CREATE TABLE meta (")
    assert "CREATE INDEX ix_generations_created_at ON generations (created_at)" in statements
    assert "ALTER TABLE generations ADD COLUMN owner VARCHAR(64)" in statements
    assert "ALTER TABLE generations DROP COLUMN message_id" in statements
    assert "ALTER TABLE generations DROP COLUMN channel_message_id" in statements
    assert "ALTER TABLE generations DROP COLUMN owner" in statements
    assert "CREATE INDEX ix_generations_status_seq ON generations (status, seq)" in statements
    assert any("TIMESTAMP WITH TIME ZONE" in s for s in statements)


def test_a_dropped_column_must_not_be_indexed() -> None:
    steps = migrations.Evolution(schema_at(LATEST_SCHEMA_VERSION), None)
    with pytest.raises(ValueError, match="indexed"):
        steps.drop_columns("generations", "status")


async def test_every_query_compiles_for_postgresql() -> None:
    """The PostgreSQL form of every store method's statements (no server needed)."""
    db = PostgresCompiler()
    store = Store(db)
    gap = timedelta(seconds=5)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "ping": store.ping,
        "get_meta": lambda: store.get_meta("k"),
        "set_meta": lambda: store.set_meta("k", "v"),
        "create_generation": lambda: store.create_generation(new_gen()),
        "get_generation": lambda: store.get_generation("g"),
        "get_generation_by_prediction_id": lambda: store.get_generation_by_prediction_id("p"),
        "update_generation": lambda: store.update_generation("g", status="running"),
        "set_generation": lambda: store.set_generation("g", status="failed", finished_at=T0),
        "count_generations_by_user": lambda: store.count_generations_by_user(T0),
        "unfinished_generations": store.unfinished_generations,
        "admit_generations": lambda: store.admit_generations(
            [AdmitRequest(new_gen(), GenerationLimits(cooldown=5, per_day=3), "p", T0, T0 + gap)]
        ),
        "claim_starts": lambda: store.claim_starts("p", 4, T0, T0 + gap),
        "queue_order": store.queue_order,
        "cancel_generation": lambda: store.cancel_generation("g", T0, "Canceled."),
        "finish_generation": lambda: store.finish_generation(
            "g", "failed", finished_at=T0, owner="p", error="x"
        ),
        "set_prediction": lambda: store.set_prediction("g", "pred", "p"),
        "admit_training": lambda: store.admit_training(
            new_training(), TrainingLimits(per_day=3), "p", T0, T0 + gap
        ),
        "renew_training_leases": lambda: store.renew_training_leases("p", T0),
        "abandoned_trainings": lambda: store.abandoned_trainings(T0, "gone"),
        "swap_meta": lambda: store.swap_meta("k", "v"),
        "claim_slot": lambda: store.claim_slot("identify:1:0", T0, gap),
        "renew_leases": lambda: store.renew_leases("p", T0),
        "release_leases": lambda: store.release_leases("p", T0, ["g"]),
        "expire_leases_of": lambda: store.expire_leases_of(["p"], T0),
        "take_over_generations": lambda: store.take_over_generations("p", T0, T0 + gap),
        "register_process": lambda: store.register_process("p", "h", 1, "bot", T0),
        "heartbeat_process": lambda: store.heartbeat_process("p", T0),
        "processes_on_host": lambda: store.processes_on_host("h"),
        "forget_processes": lambda: store.forget_processes(["p"]),
        "forget_silent_processes": lambda: store.forget_silent_processes(T0),
        "create_training": lambda: store.create_training(new_training(params={"a": 1})),
        "get_training": lambda: store.get_training("t"),
        "get_training_by_replicate_id": lambda: store.get_training_by_replicate_id("r"),
        "update_training": lambda: store.update_training("t", step=3),
        "change_training": lambda: store.change_training(
            "t", lambda t: {"step": 3}, webhook_id="w", received_at=T0
        ),
        "unfinished_trainings": store.unfinished_trainings,
        "claim_notification": lambda: store.claim_notification("t", T0),
        "claim_status_edit": lambda: store.claim_status_edit("t", T0, gap),
        "claim_poll": lambda: store.claim_poll("t", T0, gap),
        "count_trainings_since": lambda: store.count_trainings_since("discord:1", T0),
        "count_active_trainings": lambda: store.count_active_trainings(None),
        "recent_trainings": lambda: store.recent_trainings(guild_id=1, user_id=2),
        "upsert_model": lambda: store.upsert_model(
            "o", "n", guild_id=1, creator_key="k", trigger_word="T", latest_version=None
        ),
        "get_model": lambda: store.get_model("o", "n"),
        "models_for_guild": lambda: store.models_for_guild(1, "a_"),
        "record_webhook": lambda: store.record_webhook("w", T0),
        "prune_webhooks": lambda: store.prune_webhooks(T0),
        "get_guild_settings": lambda: store.get_guild_settings(1),
        "change_guild_settings": lambda: store.change_guild_settings(
            1, {"cooldown": 30.0, "budget": None}, user_id=2, now=T0
        ),
        "settings_changes": lambda: store.settings_changes(1),
        "month_spend": lambda: store.month_spend(Budget("guild", "1", 5.0, T0, T0 + gap)),
        "usage_by_day": lambda: store.usage_by_day(since=T0, guild_id=1),
        "top_users": lambda: store.top_users(1, T0),
        "active_jobs": store.active_jobs,
        "claim_budget_notice": lambda: store.claim_budget_notice("guild:1", "2025-01", T0),
        "create_api_key": lambda: store.create_api_key(
            "ci", "h", per_day=1, cooldown=None, budget_usd=2.0, now=T0
        ),
        "api_key_by_hash": lambda: store.api_key_by_hash("h"),
        "get_api_key": lambda: store.get_api_key("k"),
        "list_api_keys": store.list_api_keys,
        "has_api_keys": store.has_api_keys,
        "revoke_api_key": lambda: store.revoke_api_key("ci", T0),
    }
    public = {
        name
        for name, _ in inspect.getmembers(Store, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert set(calls) == public - {"close"}, "a store method is missing here"
    try:
        for call in calls.values():
            await call()
    finally:
        await store.close()
    sql = "\n".join(db.sql)
    assert "ON CONFLICT (key) DO UPDATE SET value = excluded.value" in sql
    assert (
        "ON CONFLICT (owner, name) DO UPDATE SET trigger_word = excluded.trigger_word, "
        "latest_version = coalesce(excluded.latest_version, trained_models.latest_version)"
    ) in sql
    assert "ON CONFLICT (webhook_id) DO NOTHING" in sql
    assert "RETURNING generations.id" in sql and "RETURNING trainings.id" in sql
    assert "ESCAPE '\\'" in sql
    assert "$1" in sql  # asyncpg's parameter style
    assert "UPDATE generations SET status=$1::VARCHAR, updated_at=$2" in sql
    assert "trainings.status IN ($1::VARCHAR, $2::VARCHAR)" in sql
    assert "pg_advisory_xact_lock" in sql
    assert "FOR UPDATE SKIP LOCKED" in sql
    assert "ON CONFLICT (scope, period) DO NOTHING" in sql
    assert "to_char(timezone($" in sql


async def test_sqlite_pragmas(sqlite_store: Store, tmp_path: Path) -> None:
    async with sqlite_store.db.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 5000
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    with sqlite3.connect(tmp_path / "bot.sqlite3") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_relative_sqlite_path_creates_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = await open_store("sqlite:///data/nested/bot.sqlite3")
    try:
        assert await s.ping()
    finally:
        await s.close()
    assert (tmp_path / "data" / "nested" / "bot.sqlite3").is_file()


async def test_absolute_sqlite_path_creates_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "bot.db"
    s = await open_store(sqlite_url(target))
    await s.close()
    assert target.is_file()


@pytest.mark.parametrize("url", ["sqlite://", ":memory:", "sqlite:///:memory:"])
async def test_in_memory(url: str) -> None:
    s = await open_store(url)
    try:
        assert s.schema_version == LATEST_SCHEMA_VERSION
        gens = await asyncio.gather(*(s.create_generation(new_gen()) for _ in range(30)))
        await asyncio.gather(*(s.update_generation(g.id, status="running") for g in gens))
        assert len(await s.unfinished_generations()) == 30
    finally:
        await s.close()


@pytest.mark.parametrize(
    "url",
    ["", "not a url", "mysql://user:secret@host/db", "postgresql+psycopg2://user:secret@h/db"],
)
async def test_bad_url_is_a_clear_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL") as info:
        await open_store(url)
    assert "secret" not in str(info.value)


def test_postgres_urls_are_mapped_to_asyncpg() -> None:
    for raw in ("postgresql://u:p@db:5432/bot", "postgres://u:p@db:5432/bot"):
        url = normalize_database_url(raw)
        assert url.drivername == "postgresql+asyncpg"
        assert (url.host, url.database) == ("db", "bot")
    url = normalize_database_url("postgresql://u:p@db/bot?sslmode=require")
    assert dict(url.query) == {"ssl": "require"}
    assert normalize_database_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"


async def test_ping_and_close(db_url: str) -> None:
    s = await open_store(db_url)
    assert await s.ping()
    await s.close()
    await s.close()  # idempotent
    assert not await s.ping()
    with pytest.raises(RuntimeError):
        await s.get_meta("x")


async def test_survives_sigkill(tmp_path: Path) -> None:
    """A process killed right after a write leaves the row behind for the next start."""
    db = tmp_path / "killed.sqlite3"
    script = f"""
import asyncio, os, signal
from services.store import NewGeneration, open_store

async def main():
    s = await open_store({sqlite_url(db)!r})
    g = await s.create_generation(NewGeneration(user_key="k", prompt="p", model="m"))
    await s.update_generation(g.id, status="running", prediction_id="pred-1")
    print(g.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == -9, proc.stderr
    gen_id = proc.stdout.strip()
    s = await open_store(sqlite_url(db))
    try:
        [g] = await s.unfinished_generations()
        assert (g.id, g.status, g.prediction_id) == (gen_id, "running", "pred-1")
    finally:
        await s.close()


# -- shielding from cancellation --------------------------------------------------------------


def test_every_public_store_coroutine_is_shielded() -> None:
    """A public store method added without ``@shielded`` would let a cancelled caller
    abandon a transaction halfway; only ``close`` (which waits for the others) is exempt."""
    public = {
        name: member
        for name, member in inspect.getmembers(Store, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert {"create_generation", "update_training", "ping", "prune_webhooks"} <= set(public)
    assert {name for name, member in public.items() if not is_shielded(member)} == {"close"}


async def test_cancelled_caller_does_not_lose_the_write(db_url: str) -> None:
    s = await open_store(db_url)
    calls = [asyncio.create_task(s.set_meta(f"k{i}", "v")) for i in range(5)]
    calls.append(asyncio.create_task(s.create_generation(new_gen())))
    await asyncio.sleep(0)  # every call has started, none has finished
    for call in calls:
        call.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    await s.close()  # waits for the calls the callers gave up on

    s = await open_store(db_url)
    try:
        assert [await s.get_meta(f"k{i}") for i in range(5)] == ["v"] * 5
        assert len(await s.unfinished_generations()) == 1
    finally:
        await s.close()


# -- meta -------------------------------------------------------------------------------------


async def test_meta(store: Store) -> None:
    assert await store.get_meta("commands_hash") is None
    await store.set_meta("commands_hash", "abc")
    assert await store.get_meta("commands_hash") == "abc"
    await store.set_meta("commands_hash", "def")
    assert await store.get_meta("commands_hash") == "def"


# -- generations ------------------------------------------------------------------------------


async def test_create_and_get_generation(store: Store) -> None:
    g = await store.create_generation(new_gen(interaction_id=2**62 + 5, source="api"))
    assert 1 <= len(g.id) <= 20 and set(g.id) <= URLSAFE
    assert g.status == "queued" and g.source == "api"
    assert g.params == {"aspect_ratio": "1:1", "count": 1, "seed": 42}
    assert g.interaction_id == 2**62 + 5
    assert g.created_at.tzinfo is UTC and g.updated_at.tzinfo is UTC
    assert g.error is g.prediction_id is g.started_at is g.finished_at is None
    assert await store.get_generation(g.id) == g
    assert await store.get_generation("nope") is None


async def test_ids_are_unique(store: Store) -> None:
    gens = await asyncio.gather(*(store.create_generation(new_gen()) for _ in range(50)))
    assert len({g.id for g in gens}) == 50


async def test_update_generation(store: Store) -> None:
    g = await store.create_generation(new_gen())
    started = datetime(2025, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert await store.update_generation(
        g.id, status="running", started_at=started, prediction_id="p1"
    )
    finished = T0 + timedelta(seconds=5)
    assert await store.update_generation(
        g.id,
        status="succeeded",
        finished_at=finished,
        seed=2**40,
        predict_time=1.25,
        result_message_id=9,
        error=None,
    )
    got = await store.get_generation(g.id)
    assert got is not None
    assert got.status == "succeeded"
    assert got.started_at == T0 and got.started_at.tzinfo is UTC  # converted to UTC
    assert got.finished_at == finished
    assert (got.seed, got.predict_time, got.prediction_id) == (2**40, 1.25, "p1")
    assert got.result_message_id == 9
    assert got.updated_at >= g.updated_at
    assert await store.get_generation_by_prediction_id("p1") == got
    assert await store.get_generation_by_prediction_id("p2") is None
    assert not await store.update_generation("missing", status="failed")


async def test_update_generation_rejects_bad_input(store: Store) -> None:
    g = await store.create_generation(new_gen())
    with pytest.raises(TypeError, match="bogus"):
        await store.update_generation(g.id, bogus=1)
    with pytest.raises(TypeError):
        await store.update_generation(g.id, id="other")
    with pytest.raises(ValueError, match="status"):
        await store.update_generation(g.id, status="done")
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.update_generation(g.id, finished_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        await store.create_generation(new_gen(status="weird"))
    with pytest.raises(ValueError):
        await store.create_generation(new_gen(source="irc"))


async def test_count_generations_by_user(store: Store) -> None:
    for minutes in (0, 30, 59, 61, 120):
        await store.create_generation(
            new_gen(created_at=T0 - timedelta(minutes=minutes), user_key="discord:5")
        )
    await store.create_generation(new_gen(created_at=T0, user_key="api:abc"))
    by_user = store.count_generations_by_user
    assert await by_user(T0 - timedelta(hours=1)) == {"discord:5": 3, "api:abc": 1}
    assert await by_user(T0 - timedelta(days=1)) == {"discord:5": 5, "api:abc": 1}
    assert await by_user(T0) == {"discord:5": 1, "api:abc": 1}  # inclusive bound
    assert await by_user(T0 + timedelta(seconds=1)) == {}
    # The same instant in another timezone gives the same window.
    tz = timezone(timedelta(hours=-5))
    assert await by_user((T0 - timedelta(hours=1)).astimezone(tz)) == {
        "discord:5": 3,
        "api:abc": 1,
    }
    with pytest.raises(ValueError):
        await by_user(datetime(2025, 1, 1))


async def test_unfinished_generations(store: Store) -> None:
    ids = {}
    for i, status in enumerate(("queued", "running", "succeeded", "failed", "canceled")):
        g = await store.create_generation(new_gen(created_at=T0 + timedelta(seconds=i)))
        await store.update_generation(g.id, status=status)
        ids[status] = g.id
    unfinished = await store.unfinished_generations()
    assert [g.id for g in unfinished] == [ids["queued"], ids["running"]]


async def test_recent_generations_helper(store: Store) -> None:
    made = [
        await store.create_generation(
            new_gen(user_key=f"discord:{i % 2}", created_at=T0 + timedelta(seconds=i))
        )
        for i in range(4)
    ]
    assert [g.id for g in await recent_generations(store)] == [g.id for g in reversed(made)]
    assert [g.id for g in await recent_generations(store, user_key="discord:0", limit=1)] == [
        made[2].id
    ]


async def test_200_concurrent_generations(store: Store) -> None:
    async def one(i: int) -> str:
        g = await store.create_generation(new_gen(prompt=f"p{i}"))
        await store.update_generation(g.id, status="running", started_at=datetime.now(UTC))
        await store.update_generation(g.id, prediction_id=f"pred-{i}")
        await store.update_generation(g.id, status="succeeded", finished_at=datetime.now(UTC))
        return g.id

    ids = await asyncio.gather(*(one(i) for i in range(200)))
    assert len(set(ids)) == 200
    assert await store.unfinished_generations() == []
    assert await store.count_generations_by_user(T0) == {"discord:1": 200}
    got = await asyncio.gather(*(store.get_generation(i) for i in ids))
    assert all(g is not None and g.status == "succeeded" for g in got)


# -- trainings --------------------------------------------------------------------------------


async def test_create_and_get_training(store: Store) -> None:
    t = await store.create_training(new_training(params={"lora_rank": 16}))
    assert 1 <= len(t.id) <= 20 and set(t.id) <= URLSAFE
    assert 1 <= len(t.notice_nonce) <= 25
    assert t.status == "starting" and t.training_id is None and t.notified_at is None
    assert t.total_steps == 1000 and t.params == {"lora_rank": 16}
    assert t.model_ref == "alice/my-lora"
    assert t.created_at.tzinfo is UTC
    assert await store.get_training(t.id) == t
    assert await store.get_training("missing") is None
    assert await store.get_training_by_replicate_id("r1") is None

    assert await store.update_training(t.id, training_id="r1", status="processing", step=10)
    got = await store.get_training_by_replicate_id("r1")
    assert got is not None and got.id == t.id and got.step == 10
    assert got.notice_nonce == t.notice_nonce  # stable

    other = await store.create_training(new_training())
    assert other.notice_nonce != t.notice_nonce
    with pytest.raises(IntegrityError):
        await store.update_training(other.id, training_id="r1")
    with pytest.raises(TypeError):
        await store.update_training(t.id, notice_nonce="x")
    with pytest.raises(ValueError):
        await store.update_training(t.id, status="queued")


async def test_change_training_reads_writes_and_records_the_webhook_at_once(
    store: Store,
) -> None:
    t = await store.create_training(new_training(training_id="r3"))
    seen: list[int | None] = []

    def decide(current: Training) -> dict[str, Any]:
        seen.append(current.step)
        return {"step": (current.step or 0) + 5}

    change = await store.change_training(t.id, decide, webhook_id="w1", received_at=T0)
    assert change is not None and not change.duplicate
    assert change.changes == {"step": 5} and change.training is not None
    assert change.training.step == 5 and change.training.updated_at >= t.updated_at
    assert (await store.get_training(t.id)).step == 5  # type: ignore[union-attr]

    again = await store.change_training(t.id, decide, webhook_id="w1", received_at=T0)
    assert again is not None and again.duplicate and again.training is None
    assert seen == [None]  # a delivery seen before changes nothing
    assert not await store.record_webhook("w1", T0)

    unchanged = await store.change_training(t.id, lambda current: {})
    assert unchanged is not None and unchanged.changes == {}
    assert unchanged.training is not None and unchanged.training.step == 5
    assert await store.change_training("missing", decide) is None
    with pytest.raises(TypeError):
        await store.change_training(t.id, lambda current: {"notice_nonce": "x"})


async def test_update_training_all_fields(store: Store) -> None:
    t = await store.create_training(new_training(training_id="r2", status_message_id=5))
    fields = {
        "status": "succeeded",
        "step": 1000,
        "total_steps": 1000,
        "version": "alice/my-lora:abc123",
        "weights": "https://example.invalid/weights.tar",
        "error": None,
        "status_message_id": 6,
        "started_at": T0,
        "completed_at": T0 + timedelta(minutes=20),
        "last_webhook_at": T0 + timedelta(minutes=19),
        "last_polled_at": T0 + timedelta(minutes=18),
        "last_status_edit_at": T0 + timedelta(minutes=17),
    }
    assert await store.update_training(t.id, **fields)
    got = await store.get_training(t.id)
    assert got is not None
    for key, value in fields.items():
        assert getattr(got, key) == value, key
    assert not await store.update_training("missing", step=1)


async def test_unfinished_trainings_and_claims(store: Store) -> None:
    a = await store.create_training(new_training(created_at=T0))
    b = await store.create_training(new_training(created_at=T0 + timedelta(seconds=1)))
    c = await store.create_training(new_training(created_at=T0 + timedelta(seconds=2)))
    await store.update_training(b.id, status="succeeded")  # finished, not yet notified
    await store.update_training(c.id, status="failed")
    assert await store.claim_notification(c.id, T0)
    assert [t.id for t in await store.unfinished_trainings()] == [a.id, b.id]

    assert not await store.claim_notification(c.id, T0)
    got = await store.get_training(c.id)
    assert got is not None and got.notified_at == T0
    assert not await store.claim_notification("missing", T0)


async def test_claim_notification_50_concurrent(store: Store) -> None:
    t = await store.create_training(new_training())
    now = datetime.now(UTC)
    results = await asyncio.gather(*(store.claim_notification(t.id, now) for _ in range(50)))
    assert results.count(True) == 1


async def test_claim_notification_across_two_stores(db_url: str) -> None:
    s1, s2 = await open_store(db_url), await open_store(db_url)
    try:
        trainings = [await s1.create_training(new_training()) for _ in range(5)]
        now = datetime.now(UTC)
        for t in trainings:
            claims = [s.claim_notification(t.id, now) for _ in range(25) for s in (s1, s2)]
            results = await asyncio.gather(*claims)
            assert results.count(True) == 1
        assert await s2.unfinished_trainings() == []
    finally:
        await s1.close()
        await s2.close()


async def test_interval_claims(store: Store) -> None:
    t = await store.create_training(new_training())
    gap = timedelta(seconds=10)
    assert await store.claim_status_edit(t.id, T0, gap)
    assert not await store.claim_status_edit(t.id, T0 + timedelta(seconds=9), gap)
    assert await store.claim_status_edit(t.id, T0 + timedelta(seconds=10), gap)
    results = await asyncio.gather(
        *(store.claim_poll(t.id, T0 + timedelta(minutes=1), gap) for _ in range(20))
    )
    assert results.count(True) == 1
    got = await store.get_training(t.id)
    assert got is not None
    assert got.last_status_edit_at == T0 + timedelta(seconds=10)
    assert got.last_polled_at == T0 + timedelta(minutes=1)


async def test_training_counts(store: Store) -> None:
    for minutes, guild, status in (
        (0, 10, "starting"),
        (10, 10, "processing"),
        (20, 10, "succeeded"),
        (90, 20, "processing"),
        (5, None, "starting"),
    ):
        t = await store.create_training(
            new_training(created_at=T0 - timedelta(minutes=minutes), guild_id=guild)
        )
        await store.update_training(t.id, status=status)
    await store.create_training(new_training(user_key="discord:2", created_at=T0, guild_id=30))

    assert await store.count_trainings_since("discord:1", T0 - timedelta(hours=1)) == 4
    assert await store.count_trainings_since("discord:1", T0 - timedelta(hours=2)) == 5
    assert await store.count_trainings_since("discord:2", T0) == 1
    assert await store.count_active_trainings(10) == 2
    assert await store.count_active_trainings(20) == 1
    assert await store.count_active_trainings(99) == 0
    assert await store.count_active_trainings(None) == 1  # DMs


async def test_recent_trainings(store: Store) -> None:
    made = []
    for i, (guild, user) in enumerate([(10, 1), (10, 2), (20, 1), (10, 1), (None, 1)]):
        made.append(
            await store.create_training(
                new_training(guild_id=guild, user_id=user, created_at=T0 + timedelta(minutes=i))
            )
        )
    ids = [t.id for t in made]
    in_guild = await store.recent_trainings(guild_id=10, user_id=None)
    assert [t.id for t in in_guild] == [ids[3], ids[1], ids[0]]
    mine_here = await store.recent_trainings(guild_id=10, user_id=1)
    assert [t.id for t in mine_here] == [ids[3], ids[0]]
    mine = await store.recent_trainings(guild_id=None, user_id=1, limit=2)
    assert [t.id for t in mine] == [ids[4], ids[3]]
    assert len(await store.recent_trainings(guild_id=None, user_id=None)) == 5


# -- trained models ---------------------------------------------------------------------------


async def test_upsert_and_get_model(store: Store) -> None:
    assert await store.get_model("alice", "lora") is None
    await store.upsert_model(
        "Alice",
        "Lora",
        guild_id=10,
        creator_key="discord:1",
        trigger_word="TOK",
        latest_version=None,
    )
    m = await store.get_model("alice", "lora")
    assert m is not None
    assert (m.owner, m.name, m.guild_id, m.creator_key) == ("alice", "lora", 10, "discord:1")
    assert m.latest_version is None and m.version_ref is None
    assert m.updated_at.tzinfo is UTC

    await store.upsert_model(
        "alice",
        "lora",
        guild_id=10,
        creator_key="discord:1",
        trigger_word="ZAP",
        latest_version="v1",
    )
    # A later upsert keeps creator and guild, and None does not erase the version.
    await store.upsert_model(
        "alice",
        "lora",
        guild_id=20,
        creator_key="discord:9",
        trigger_word="ZAP",
        latest_version=None,
    )
    m2 = await store.get_model("ALICE", "LORA")
    assert m2 is not None
    assert (m2.guild_id, m2.creator_key, m2.trigger_word) == (10, "discord:1", "ZAP")
    assert m2.latest_version == "v1" and m2.version_ref == "alice/lora:v1"
    assert m2.created_at == m.created_at and m2.updated_at >= m.updated_at


async def test_models_for_guild(store: Store) -> None:
    async def add(owner: str, name: str, guild: int | None, version: str | None) -> None:
        await store.upsert_model(
            owner, name, guild_id=guild, creator_key="k", trigger_word="T", latest_version=version
        )

    await add("alice", "cats", 10, "v1")
    await add("alice", "cars", 10, "v2")
    await add("bob", "cats", 10, "v3")
    await add("bob", "pending", 10, None)  # no version yet: hidden
    await add("carol", "cats", 20, "v4")  # other guild
    await add("dave", "dm_model", None, "v5")  # trained in DMs
    await add("eve", "d%m", 10, "v6")

    def refs(models: list) -> set[str]:
        return {m.ref for m in models}

    assert refs(await store.models_for_guild(10)) == {
        "alice/cats",
        "alice/cars",
        "bob/cats",
        "eve/d%m",
    }
    assert refs(await store.models_for_guild(10, "ca")) == {"alice/cats", "alice/cars", "bob/cats"}
    assert refs(await store.models_for_guild(10, "CAT")) == {"alice/cats", "bob/cats"}
    assert refs(await store.models_for_guild(10, "alice/c")) == {"alice/cats", "alice/cars"}
    assert refs(await store.models_for_guild(10, "bob/p")) == set()
    assert refs(await store.models_for_guild(10, "d%")) == {"eve/d%m"}  # % is literal
    assert refs(await store.models_for_guild(10, "_")) == set()  # _ is literal
    assert refs(await store.models_for_guild(None)) == {"dave/dm_model"}
    assert refs(await store.models_for_guild(20, "")) == {"carol/cats"}
    assert len(await store.models_for_guild(10, limit=2)) == 2
    newest = await store.models_for_guild(10, limit=1)
    assert newest[0].ref == "eve/d%m"  # most recently updated first


# -- webhooks ---------------------------------------------------------------------------------


async def test_record_webhook_idempotent(store: Store) -> None:
    assert await store.record_webhook("msg_1", T0)
    assert not await store.record_webhook("msg_1", T0 + timedelta(seconds=1))
    assert await store.record_webhook("msg_2", T0)
    results = await asyncio.gather(*(store.record_webhook("msg_3", T0) for _ in range(20)))
    assert results.count(True) == 1


async def test_prune_webhooks(store: Store) -> None:
    await store.record_webhook("old", T0 - timedelta(days=2))
    await store.record_webhook("edge", T0 - timedelta(days=1))
    await store.record_webhook("new", T0)
    assert await store.prune_webhooks(T0 - timedelta(days=1)) == 1
    assert await store.prune_webhooks(T0 - timedelta(days=1)) == 0
    assert await store.record_webhook("old", T0)  # forgotten, so accepted again
    assert not await store.record_webhook("edge", T0)  # received exactly at the bound: kept
    assert not await store.record_webhook("new", T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.prune_webhooks(datetime(2025, 1, 1))


async def test_prune_webhooks_finds_old_ids_through_an_index(sqlite_store: Store) -> None:
    """Pruning runs periodically in the bot: it must not scan every id ever received."""
    t = webhooks_table
    stmt = sa.delete(t).where(t.c.received_at < T0).compile(dialect=sqlite_dialect.dialect())
    async with sqlite_store.db.engine.connect() as conn:
        plan = await conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {stmt}", ("2025-01-01 12:00:00.000000",)
        )
        details = " ".join(str(row[-1]) for row in plan)
    assert "SEARCH webhook_events USING INDEX ix_webhook_events_received_at" in details, details


async def test_concurrent_writes_share_transactions_and_failures_stay_apart(
    sqlite_store: Store,
) -> None:
    """Writes that arrive together are committed together (SQLite has one writer at a
    time); a write that fails inside such a group fails alone."""
    trainings = [await sqlite_store.create_training(new_training()) for _ in range(40)]
    begins: list[int] = []
    engines = [sqlite_store.db.engine.sync_engine]
    if sqlite_store.db.group_writer is not None:
        engines.append(sqlite_store.db.group_writer.engine)
    for engine in engines:
        sa.event.listen(engine, "begin", lambda conn: begins.append(1))
    done = await asyncio.gather(
        *(sqlite_store.update_training(t.id, step=i) for i, t in enumerate(trainings))
    )
    assert done == [True] * 40
    assert len(begins) <= 5, f"{len(begins)} transactions for 40 concurrent writes"

    wanted = [f"r{i}" for i in range(39)] + ["r0"]  # the last one clashes with the first
    answers = await asyncio.gather(
        *(
            sqlite_store.update_training(t.id, training_id=rid)
            for t, rid in zip(trainings, wanted, strict=True)
        ),
        return_exceptions=True,
    )
    errors = [a for a in answers if isinstance(a, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], IntegrityError)
    assert answers.count(True) == 39
    stored = await asyncio.gather(*(sqlite_store.get_training(t.id) for t in trainings))
    assert sorted(t.training_id for t in stored if t and t.training_id) == sorted(wanted[:39])
    assert [t.step for t in stored if t] == list(range(40))
