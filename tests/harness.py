"""Runs the real bot against the emulators, built exactly as ``python bot.py`` builds it.

In-process (:class:`BotHarness`, for most behaviour tests) or as a ``python bot.py``
subprocess (:class:`BotProcess`, for exit codes, signals and SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from bot import BotApp, ImageBot
from cogs._discord_endpoints import discord_endpoints, point_discord_at
from services.app import Services
from services.settings import load_settings
from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import TRAINER_VERSION, ReplicateEmulator

ROOT = Path(__file__).resolve().parents[1]


def bot_env(
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    data_dir: Path,
    **overrides: str,
) -> dict[str, str]:
    env = {
        "DISCORD_TOKEN": discord_emu.bot_token,
        "DISCORD_API_BASE": discord_emu.api_base,
        "DISCORD_GATEWAY_URL": discord_emu.gateway_url,
        "REPLICATE_API_TOKEN": replicate_emu.token,
        "REPLICATE_BASE_URL": replicate_emu.base_url,
        "DATABASE_URL": f"sqlite:///{data_dir / 'bot.sqlite3'}",
        "TRAINER_VERSION": TRAINER_VERSION,
        "GENERATE_COOLDOWN_SECONDS": "0",
        "PROGRESS_AFTER_SECONDS": "1",
        "LOG_LEVEL": "DEBUG",
        "SHUTDOWN_GRACE_SECONDS": "0.5",
    }
    env.update(overrides)
    return env


class BotHarness:
    """Start, stop and restart the in-process bot; every start reads the same store."""

    def __init__(self, discord_emu: DiscordEmulator, env: Mapping[str, str]) -> None:
        self.emu = discord_emu
        self.env = dict(env)
        self.app: BotApp | None = None
        self._saved = discord_endpoints()

    @property
    def bot(self) -> ImageBot:
        assert self.app is not None and self.app.bot is not None
        return self.app.bot

    @property
    def services(self) -> Services:
        assert self.app is not None and self.app.services is not None
        return self.app.services

    async def start(self, **overrides: str) -> ImageBot:
        self.env.update(overrides)
        settings = load_settings(self.env, env_file=None)
        self.app = BotApp(settings)
        await self.app.start()
        await self.emu.wait_ready(timeout=10)
        return self.bot

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.close()
            self.app = None
        point_discord_at(*self._saved)

    async def restart(self, **overrides: str) -> ImageBot:
        await self.stop()
        return await self.start(**overrides)


class BotProcess:
    """``python bot.py`` as a subprocess, with its stderr collected."""

    def __init__(self, env: Mapping[str, str], cwd: Path, args: tuple[str, ...] = ()) -> None:
        self.env = {**_base_env(), **env}
        self.cwd = cwd
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr = bytearray()
        self._reader: asyncio.Task[None] | None = None
        self._lines: asyncio.Queue[str] = asyncio.Queue()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bot.py"),
            *self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.extend(line)
            await self._lines.put(line.decode(errors="replace"))

    async def wait_for_log(self, text: str, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while True:
                line = await self._lines.get()
                if text in line:
                    return line

    async def wait(self, timeout: float = 15.0) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            if self._reader is not None:
                await self._reader
        return code

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader

    @property
    def output(self) -> str:
        return self.stderr.decode(errors="replace")


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "SSL_CERT_FILE", "SYSTEMROOT", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    return env
