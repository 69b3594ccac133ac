"""Shared fixtures: the emulators' fixtures live beside the emulators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness, bot_env

pytest_plugins = [
    "tests.emulators.fixtures_discord",
    "tests.emulators.fixtures_replicate",
]


@pytest.fixture
async def harness(
    discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> AsyncIterator[BotHarness]:
    """The real bot, not started yet: ``await harness.start(NAME="value", ...)``."""
    h = BotHarness(discord_emu, bot_env(discord_emu, replicate_emu, tmp_path))
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def running(harness: BotHarness) -> BotHarness:
    """The real bot, started with the default test settings."""
    await harness.start()
    return harness
