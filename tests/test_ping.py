"""/ping end to end: real discord.py and the real replicate client against the emulators."""

from __future__ import annotations

import re

from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness


async def test_ping_reports_gateway_and_replicate(
    running: BotHarness, discord_emu: DiscordEmulator
) -> None:
    handle = await discord_emu.slash("ping")
    callback = await handle.first_response(timeout=3)
    text = callback.data["content"]
    assert re.search(r"Gateway: (\d+ ms|unknown)", text), text
    assert re.search(r"Replicate: \d+ ms", text), text


async def test_ping_answers_in_time_when_replicate_hangs(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.hang_next("GET", r"/v1/account")
    handle = await discord_emu.slash("ping")
    callback = await handle.first_response(timeout=3)
    assert "Replicate: unreachable" in callback.data["content"]
    replicate_emu.release_hangs()
