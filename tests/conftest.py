"""Shared fixtures: the emulators' fixtures live beside the emulators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness, bot_env
from tests.helpers.databases import BACKENDS, fresh_database

if TYPE_CHECKING:
    from tests.test_http_api import ApiServer

pytest_plugins = [
    "tests.emulators.fixtures_discord",
    "tests.emulators.fixtures_replicate",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends: run on SQLite and, when TEST_POSTGRES_URL is set, on PostgreSQL too",
    )
    config.addinivalue_line("markers", "limits(**settings): settings a fixture starts with")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("backends"):
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture
def backend() -> str:
    """The store's backend; tests marked ``backends`` run once per available backend."""
    return "sqlite"


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """DATABASE_URL of an empty database of the test's backend."""
    async with fresh_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
async def server(
    replicate_emu: ReplicateEmulator, tmp_path: Path, database_url: str
) -> AsyncIterator[ApiServer]:
    """``python bot.py --http-only`` in-process, on the test's backend, not started yet:
    ``api = await server.start(NAME="value", ...)``."""
    from tests.test_http_api import ApiServer

    (tmp_path / "train").mkdir()
    s = ApiServer(replicate_emu, tmp_path, database_url)
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def harness(
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
    database_url: str,
) -> AsyncIterator[BotHarness]:
    """The real bot, not started yet: ``await harness.start(NAME="value", ...)``."""
    env = bot_env(discord_emu, replicate_emu, tmp_path, DATABASE_URL=database_url)
    h = BotHarness(discord_emu, env)
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def running(harness: BotHarness) -> BotHarness:
    """The real bot, started with the default test settings."""
    await harness.start()
    return harness
