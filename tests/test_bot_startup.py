"""Starting the bot: settings errors, command sync, signals, the error handler."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import ROOT, BotHarness, BotProcess, bot_env
from tests.test_http_api import api_env


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


async def test_instance_id_is_retired_with_a_warning(
    harness: BotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """INSTANCE_ID is still accepted, with a warning that it is no longer used."""
    with caplog.at_level(logging.WARNING, logger="services.app"):
        await harness.start(INSTANCE_ID="shard-a")
    assert any("INSTANCE_ID is no longer used" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- a new user


def test_help_answers_without_the_heavy_imports() -> None:
    """``--help`` imports nothing but argparse: it answers at once, even on a busy machine."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "bot.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for name in ("DISCORD_TOKEN", "REPLICATE_API_TOKEN", "README.md", ".env.example"):
        assert name in done.stdout, done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    heavy = {"discord", "aiohttp", "replicate", "sqlalchemy", "pydantic", "services", "api"}
    assert not {name.split(".")[0] for name in imported} & heavy


async def test_copied_env_example_lists_every_problem_and_creates_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    proc = BotProcess({}, cwd=tmp_path)
    await proc.start()
    assert await proc.wait() == 2
    assert "DISCORD_TOKEN is empty" in proc.output and "REPLICATE_API_TOKEN is empty" in proc.output
    assert proc.output.startswith("Configuration error: 2 settings need fixing")
    assert "Traceback" not in proc.output and "INSTANCE_ID" not in proc.output
    assert os.listdir(tmp_path) == [".env"]


def closed_port() -> socket.socket:
    """A socket bound to a port and not listening: connections to it are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.parametrize("where", ["refused", "no such host"])
async def test_unreachable_discord_exits_1_with_one_line(
    replicate_emu: ReplicateEmulator, discord_emu: DiscordEmulator, tmp_path: Path, where: str
) -> None:
    with closed_port() as closed:
        port = closed.getsockname()[1]
        base = {
            "refused": f"http://127.0.0.1:{port}/api/v10",
            "no such host": "http://discord.invalid/api/v10",
        }[where]
        env = bot_env(discord_emu, replicate_emu, tmp_path, DISCORD_API_BASE=base)
        env["DATABASE_URL"] = "sqlite:///data/bot.sqlite3"
        proc = BotProcess(env, cwd=tmp_path)
        await proc.start()
        assert await proc.wait() == 1, proc.output
    lines = [line for line in proc.output.splitlines() if " DEBUG " not in line]
    unreachable = [line for line in lines if line.startswith("Could not reach Discord")]
    assert len(unreachable) == 1 and base in unreachable[0], proc.output
    assert "DISCORD_API_BASE" in unreachable[0]
    assert "Traceback" not in proc.output and "PyNaCl" not in proc.output
    assert discord_emu.bot_token not in proc.output
    assert os.listdir(tmp_path) == [], "the failed start left files behind"


async def test_rejected_token_exits_1_with_one_line(
    replicate_emu: ReplicateEmulator, discord_emu: DiscordEmulator, tmp_path: Path
) -> None:
    env = bot_env(discord_emu, replicate_emu, tmp_path, DISCORD_TOKEN="not-the-bot-token")
    env["DATABASE_URL"] = "sqlite:///data/bot.sqlite3"
    (tmp_path / "data").mkdir()
    proc = BotProcess(env, cwd=tmp_path)
    await proc.start()
    assert await proc.wait() == 1, proc.output
    assert os.listdir(tmp_path / "data") == [], "the failed start left a database behind"
    rejected = [line for line in proc.output.splitlines() if "DISCORD_TOKEN" in line]
    assert len(rejected) == 1 and "rejected" in rejected[0], proc.output
    assert "Traceback" not in proc.output and "PyNaCl" not in proc.output
    assert "not-the-bot-token" not in proc.output


async def test_port_in_use_leaves_no_database(
    replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = api_env(replicate_emu, tmp_path, HTTP_PORT=str(busy.getsockname()[1]))
        env["DATABASE_URL"] = "sqlite:///nested/data/bot.sqlite3"
        proc = BotProcess(env, cwd=tmp_path, args=("--http-only",))
        await proc.start()
        assert await proc.wait() == 2
    assert "cannot listen" in proc.output
    assert not (tmp_path / "nested").exists()


async def test_http_only_without_api_token_warns_that_the_api_is_off(
    replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    env = api_env(replicate_emu, tmp_path, LOG_LEVEL="INFO")
    env.pop("API_TOKEN")
    proc = BotProcess(env, cwd=tmp_path, args=("--http-only",))
    await proc.start()
    try:
        line = await proc.wait_for_log("API_TOKEN", timeout=20)
        assert "WARNING" in line and "/image/" in line and "set API_TOKEN" in line
        await proc.wait_for_log("web server listening", timeout=20)
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.output
    finally:
        await proc.kill()
