"""pytest fixtures for the Discord emulator (registered in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import discord.gateway
import discord.http
import pytest

from cogs._discord_endpoints import point_discord_at
from tests.emulators.discord import DiscordEmulator


@pytest.fixture
async def discord_emu() -> AsyncIterator[DiscordEmulator]:
    """A running emulator on 127.0.0.1 (free port).

    At teardown the test fails if any REST exchange broke Discord's OpenAPI document,
    hit a route the emulator does not know (unless the test declared it with
    ``emu.allow_unknown_route``), crashed a handler of the emulator, or if the bot broke
    a sharding rule on the gateway (``emu.gateway_violations``). Close any bot
    that uses it before this runs: fixtures that depend on ``discord_emu`` are torn
    down first."""
    emu = DiscordEmulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.close()
    emu.checker.assert_clean()
    assert not emu.internal_errors, f"the Discord emulator failed: {emu.internal_errors}"
    broken = [str(v) for v in emu.gateway_violations]
    assert not broken, f"the bot broke Discord's gateway rules: {broken}"
    unexpected = emu.unexpected_unknown_routes()
    assert not unexpected, f"the bot called routes the Discord emulator does not know: {unexpected}"


@pytest.fixture
def discord_at_emu(discord_emu: DiscordEmulator) -> Iterator[DiscordEmulator]:
    """``discord_emu``, with discord.py pointed at it for the test (restored afterwards:
    the two addresses are process-wide class attributes)."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_discord_at(discord_emu.api_base, discord_emu.gateway_url)
    try:
        yield discord_emu
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved
