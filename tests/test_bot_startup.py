"""Starting the bot: settings errors, command sync, signals, the error handler."""

from __future__ import annotations

import logging
import re
import signal
from pathlib import Path

import pytest

from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness, BotProcess, bot_env


async def test_without_token_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = BotProcess({"REPLICATE_API_TOKEN": "r8_x"}, cwd=tmp_path)
    await proc.start()
    assert await proc.wait() == 2
    lines = proc.output.strip().splitlines()
    assert len(lines) == 1, proc.output
    assert "DISCORD_TOKEN is not set" in lines[0]
    assert "Traceback" not in proc.output


async def test_invalid_value_exits_2_naming_it(tmp_path: Path) -> None:
    env = {"DISCORD_TOKEN": "x", "REPLICATE_API_TOKEN": "r8_x", "MAX_CONCURRENT_GENERATIONS": "0"}
    proc = BotProcess(env, cwd=tmp_path)
    await proc.start()
    assert await proc.wait() == 2
    assert "MAX_CONCURRENT_GENERATIONS is invalid" in proc.output


async def test_synced_commands_payload(running: BotHarness, discord_emu: DiscordEmulator) -> None:
    commands = {c["name"]: c for c in discord_emu.synced_commands()}
    assert {"ping", "generate", "train", "trainings"} <= set(commands)
    generate = {o["name"]: o for o in commands["generate"]["options"]}
    assert generate["prompt"]["required"] is True
    assert generate["prompt"]["max_length"] == 1000
    assert generate["model"]["autocomplete"] is True
    assert [c["value"] for c in generate["aspect_ratio"]["choices"]] == [
        "1:1",
        "16:9",
        "9:16",
        "4:3",
        "3:4",
        "3:2",
        "2:3",
        "21:9",
    ]
    assert (generate["count"]["min_value"], generate["count"]["max_value"]) == (1, 4)
    train = {o["name"]: o for o in commands["train"]["options"]}
    assert train["images"]["type"] == 11
    assert (train["steps"]["min_value"], train["steps"]["max_value"]) == (100, 4000)


async def test_global_sync_only_when_commands_change(
    harness: BotHarness, discord_emu: DiscordEmulator
) -> None:
    await harness.start()
    assert discord_emu.sync_counts[None] == 1
    await harness.restart()
    assert discord_emu.sync_counts[None] == 1, "an unchanged command set was synced again"


async def test_dev_guild_sync_once_per_change(
    harness: BotHarness, discord_emu: DiscordEmulator
) -> None:
    """The dev server gets the commands at the first start, and again only when they
    change (a restart with the same commands syncs nothing)."""
    guild_id = str(discord_emu.guild.id)
    await harness.start(DISCORD_GUILD_ID=guild_id)
    await harness.restart()
    assert discord_emu.sync_counts[discord_emu.guild.id] == 1
    assert discord_emu.sync_counts[None] == 0
    names = {c["name"] for c in discord_emu.synced_commands(discord_emu.guild.id)}
    assert "generate" in names


async def test_unexpected_error_gets_apology_with_id_in_log(
    running: BotHarness, discord_emu: DiscordEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    await running.services.store.close()
    with caplog.at_level(logging.ERROR):
        handle = await discord_emu.slash("trainings")
        callback = await handle.first_response(timeout=3)
    text = callback.data["content"]
    match = re.search(r"error id `([0-9a-f]{8})`", text)
    assert match, text
    assert callback.data["flags"] & 64
    assert any(match.group(1) in r.getMessage() and r.exc_info for r in caplog.records)


async def test_sigterm_exits_cleanly(
    discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    env = bot_env(discord_emu, replicate_emu, tmp_path)
    proc = BotProcess(env, cwd=tmp_path)
    await proc.start()
    try:
        await discord_emu.wait_ready(timeout=15)
        handle = await discord_emu.slash("ping")
        await handle.first_response(timeout=3)
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.output
    finally:
        await proc.kill()
    assert "stopped cleanly" in proc.output
    assert discord_emu.bot_token not in proc.output
    assert replicate_emu.token not in proc.output


@pytest.mark.parametrize(
    ("shards", "expected"),
    [
        ({"SHARD_IDS": "0"}, "SHARD_IDS needs SHARD_COUNT"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "2"}, "SHARD_IDS has 2"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,0"}, "SHARD_IDS is invalid: lists a shard id twice"),
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT is invalid"),
    ],
)
async def test_invalid_shards_are_refused_with_one_line(
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
    shards: dict[str, str],
    expected: str,
) -> None:
    proc = BotProcess(bot_env(discord_emu, replicate_emu, tmp_path, **shards), cwd=tmp_path)
    await proc.start()
    try:
        code = await proc.wait(timeout=15)
    finally:
        await proc.kill()
    lines = proc.output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], proc.output
