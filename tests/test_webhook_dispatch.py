"""Webhook ids are remembered long enough to drop Replicate's redeliveries, then pruned,
by the background work that both ``python bot.py`` and ``--http-only`` run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot import BotApp
from services.settings import load_settings
from services.store import Store, open_store
from services.webhook_dispatch import WEBHOOK_ID_RETENTION
from tests.emulators.replicate import TRAINER_VERSION, ReplicateEmulator
from tests.harness import BotHarness

NOW = datetime.now(UTC)


async def remember_ids(database_url: str) -> None:
    """An id past the retention, and one within it, left by an earlier process."""
    store = await open_store(database_url)
    try:
        await store.record_webhook("msg_old", NOW - WEBHOOK_ID_RETENTION - timedelta(hours=1))
        await store.record_webhook("msg_recent", NOW - timedelta(hours=1))
    finally:
        await store.close()


async def wait_forgotten(store: Store, webhook_id: str) -> None:
    """Recording an id succeeds only once it has been forgotten."""
    for _ in range(100):
        if await store.record_webhook(webhook_id, datetime.now(UTC)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{webhook_id} was not pruned")


def test_ids_outlive_the_redelivery_window() -> None:
    assert WEBHOOK_ID_RETENTION.total_seconds() >= 24 * 3600


async def test_prune_forgets_only_old_ids(running: BotHarness) -> None:
    store = running.services.store
    await store.record_webhook("msg_a", NOW - WEBHOOK_ID_RETENTION - timedelta(seconds=1))
    await store.record_webhook("msg_b", NOW - WEBHOOK_ID_RETENTION + timedelta(minutes=1))
    assert await running.services.webhooks.prune(NOW) == 1
    assert await store.record_webhook("msg_a", NOW)
    assert not await store.record_webhook("msg_b", NOW)


async def test_the_bot_prunes_old_ids_at_start(harness: BotHarness) -> None:
    await remember_ids(harness.env["DATABASE_URL"])
    await harness.start()
    await wait_forgotten(harness.services.store, "msg_old")
    assert not await harness.services.store.record_webhook("msg_recent", NOW)


async def test_http_only_prunes_old_ids_at_start(
    replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    env = {
        "REPLICATE_API_TOKEN": replicate_emu.token,
        "REPLICATE_BASE_URL": replicate_emu.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "TRAINER_VERSION": TRAINER_VERSION,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": "0",
    }
    await remember_ids(env["DATABASE_URL"])
    app = BotApp(load_settings(env, env_file=None, require_discord=False), http_only=True)
    await app.start()
    try:
        assert app.services is not None
        await wait_forgotten(app.services.store, "msg_old")
        assert not await app.services.store.record_webhook("msg_recent", NOW)
    finally:
        await app.close()
