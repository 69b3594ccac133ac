"""Entry point: ``python bot.py`` runs the Discord bot (and its web server when enabled);
``python bot.py --http-only`` runs the web server alone, without a Discord token.

Shared resources (one aiohttp session, the Replicate service, the store) are built in
:func:`main` and passed into the bot, as in discord.py's ``advanced_startup`` example.
"""

from __future__ import annotations

import argparse
import sys

HELP_EPILOG = """\
settings come from the environment or from a .env file in the working directory (copy
.env.example, which explains each one). Required: DISCORD_TOKEN (not with --http-only)
and REPLICATE_API_TOKEN. Often set: DISCORD_GUILD_ID, DATABASE_URL, HTTP_PORT,
PUBLIC_URL, API_TOKEN, LOG_LEVEL. Every setting, with its default and meaning, is in
the Configuration table of README.md.

keys of the HTTP API: python bot.py api-keys {create,list,revoke} (see --help there).

exit codes: 0 stopped cleanly, 1 Discord could not be reached or refused the token, or
the bot stopped on an error, 2 a setting is missing or invalid.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Replicate image bot for Discord, with its HTTP API and webhook receiver.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--http-only",
        action="store_true",
        help="run the web server alone (HTTP API, webhooks, health), without Discord; "
        "DISCORD_TOKEN is not needed. Listens on HTTP_HOST:HTTP_PORT (default 8080).",
    )
    return parser.parse_args(argv)


if __name__ == "__main__" and sys.argv[1:2] != ["api-keys"]:
    # Answer --help (and a mistyped option) before the imports below, which take seconds.
    parse_args()

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import math
import pkgutil
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import discord
import uvloop
from discord.ext import commands

import cogs
from api import WebServer, WebServerError, create_web_app, keys_cli
from cogs._common import BotTree
from cogs._discord_endpoints import point_discord_at
from services.app import Services, build_services
from services.background import BackgroundWork
from services.log_context import shard_of
from services.logs import configure_logging
from services.settings import Settings, SettingsError, load_settings
from services.store.url import sqlite_paths

if TYPE_CHECKING:
    from cogs.generate import Generate

log = logging.getLogger("bot")

COMMAND_HASH_KEY = "command_sync_hash:{application_id}:{guild}"
IDENTIFY_KEY = "identify:{application_id}:{bucket}"
#: Discord allows one IDENTIFY per 5 seconds per bucket; the margin covers clock skew
#: between machines.
IDENTIFY_INTERVAL = timedelta(seconds=5.5)


DISCORD_CONNECTIONS = 100
"""Connections to Discord's REST API at most, reused from request to request."""
HTTP_CONNECTIONS = 100
"""Connections of the shared session (Replicate's API and its file host) at most."""
HTTP_CONNECTIONS_PER_HOST = 32
"""Connections of the shared session to one host: a burst of downloads reuses a few TLS
connections instead of opening one each."""


class ImageBot(commands.AutoShardedBot):
    """The Discord front end. It runs the shards ``SHARD_IDS`` of ``SHARD_COUNT`` (by
    default every shard, as many as Discord recommends); several processes, each with
    its own shards, share one store."""

    def __init__(self, services: Services) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        settings = services.settings
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=BotTree,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            shard_count=settings.shard_count,
            shard_ids=settings.shard_ids,
        )
        self.services = services
        self.settings: Settings = settings
        self._max_concurrency: int | None = None

    async def login(self, token: str) -> None:
        # discord.py opens as many connections as requests are in flight: a burst of
        # interactions would pay a TLS handshake each.
        self.http.connector = aiohttp.TCPConnector(limit=DISCORD_CONNECTIONS)
        await super().login(token)

    def shard_of(self, guild_id: int | None) -> int:
        """The shard that carries a guild's events (0 outside guilds)."""
        return shard_of(guild_id, self.shard_count or 1)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Take this shard's turn to IDENTIFY: shards with the same ``shard_id %
        max_concurrency`` share a bucket, which Discord lets identify once per 5 seconds,
        whatever process (or machine) runs them; the turns are taken in the store."""
        if self._max_concurrency is None:
            limits = await self.fetch_session_start_limits()
            self._max_concurrency = max(1, limits.max_concurrency)
            if limits.remaining < len(self.shard_ids or [0]):
                log.warning(
                    "Discord allows %d more session starts today (resets in %.0f min)",
                    limits.remaining,
                    limits.reset_after / 60_000,
                )
        bucket = (shard_id or 0) % self._max_concurrency
        key = IDENTIFY_KEY.format(application_id=self.application_id, bucket=bucket)
        while True:
            wait = await self.services.store.claim_slot(key, datetime.now(UTC), IDENTIFY_INTERVAL)
            if wait <= 0:
                return
            log.info("shard %s waits %.1f s for its turn to identify", shard_id, wait)
            await asyncio.sleep(wait)

    @property
    def generate_cog(self) -> Generate:
        """The /generate cog, which buttons and modals of other cogs start jobs through."""
        cog = self.get_cog("Generate")
        if cog is None:
            raise RuntimeError("the Generate cog is not loaded")
        return cast("Generate", cog)

    async def setup_hook(self) -> None:
        for module in pkgutil.iter_modules(cogs.__path__):
            if not module.name.startswith("_"):
                await self.load_extension(f"cogs.{module.name}")
        await self.sync_commands()

    def command_payload(self) -> list[dict[str, Any]]:
        return [command.to_dict(self.tree) for command in self.tree.get_commands()]

    async def sync_commands(self) -> None:
        """Sync the commands once per deploy: when they changed since the last sync, and
        by one process only, however many start with them.

        The hash of the last synced payload is kept in the store; the process that swaps
        in the new hash syncs (to the dev server ``DISCORD_GUILD_ID`` if set, where it
        shows at once; else globally). If the sync fails, the old hash is put back so
        that the next start tries again."""
        guild_id = self.settings.discord_guild_id
        guild = discord.Object(id=guild_id) if guild_id is not None else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = json.dumps(
            [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)],
            sort_keys=True,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(payload.encode()).hexdigest()
        key = COMMAND_HASH_KEY.format(application_id=self.application_id, guild=guild_id or "all")
        store = self.services.store
        changed, previous = await store.swap_meta(key, digest)
        where = f"guild {guild_id}" if guild_id is not None else "all servers"
        if not changed:
            log.info("commands for %s unchanged since the last sync; not syncing", where)
            return
        try:
            synced = await self.tree.sync(guild=guild)
        except BaseException:
            await store.set_meta(key, previous or "")
            raise
        log.info("synced %d commands for %s", len(synced), where)

    async def on_ready(self) -> None:
        log.info(
            "ready as %s in %d guilds, shards %s of %d",
            self.user,
            len(self.guilds),
            ",".join(str(i) for i in sorted(self.shards)),
            self.shard_count or 1,
        )

    def shard_status(self) -> list[dict[str, Any]]:
        """Each shard this process runs: connected, and its latency."""
        out = []
        for shard_id, shard in sorted(self.shards.items()):
            latency = shard.latency
            ok = not shard.is_closed() and self.is_ready()
            out.append(
                {
                    "id": shard_id,
                    "connected": ok,
                    "latency_ms": None
                    if math.isnan(latency) or math.isinf(latency)
                    else round(latency * 1000, 1),
                }
            )
        return out


def create_bot(services: Services) -> ImageBot:
    """Build the bot exactly as ``python bot.py`` does."""
    settings = services.settings
    point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    return ImageBot(services)


class BotApp:
    """Everything one process runs: the shared services and the bot on top of them.

    ``python bot.py`` and the tests both start the bot through this class. With
    ``http_only`` there is no bot and the web server always runs. In both modes the
    background work (training tracker, webhook-id pruning) is started here; with the bot,
    the tracker starts once the bot is ready, to send its notices through the training
    cog's notifier."""

    def __init__(self, settings: Settings, *, http_only: bool = False) -> None:
        self.settings = settings
        self.http_only = http_only
        self.http: aiohttp.ClientSession | None = None
        self.services: Services | None = None
        self.bot: ImageBot | None = None
        self.bot_task: asyncio.Task[None] | None = None
        self.web: WebServer | None = None
        self.background: BackgroundWork | None = None

    def discord_status(self) -> dict[str, Any] | None:
        """What ``/healthz`` reports of Discord: None with ``--http-only``."""
        bot = self.bot
        if bot is None:
            return None
        shards = bot.shard_status()
        return {
            "connected": bot.is_ready()
            and not bot.is_closed()
            and all(s["connected"] for s in shards),
            "shard_count": bot.shard_count or 1,
            "shard_ids": sorted(bot.shard_ids or bot.shards),
            "shards": shards,
        }

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=HTTP_CONNECTIONS, limit_per_host=HTTP_CONNECTIONS_PER_HOST
            )
        )
        try:
            self.services = await build_services(
                self.settings, self.http, with_discord=not self.http_only
            )
            await self.services.keeper.register()
            if self.settings.web_enabled or self.http_only:
                self.web = WebServer(
                    create_web_app(self.services, discord_status=self.discord_status),
                    self.settings.http_host,
                    self.settings.web_port,
                )
                await self.web.start()
            self.background = BackgroundWork(self.services)
            if self.http_only:
                self.background.start()
                self.services.keeper.start()
                return
            assert self.settings.discord_token is not None
            self.bot = create_bot(self.services)
            await self.bot.__aenter__()
            self.background.start(before_tracking=self.bot.wait_until_ready)
            # After the cogs are loaded: they finish the Discord jobs it takes over.
            self.services.keeper.start()
            self.bot_task = asyncio.create_task(
                self.bot.start(self.settings.discord_token.get_secret_value()), name="bot"
            )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop taking work, let pending writes finish, close every session."""
        if self.web is not None:
            await self.web.stop()
            self.web = None
        if self.background is not None:
            await self.background.stop()
            self.background = None
        if self.services is not None:
            await self.services.generations.shutdown(self.settings.shutdown_grace_seconds)
            await self.services.keeper.stop(release=True)
        if self.bot is not None:
            await self.bot.close()
        if self.bot_task is not None:
            if not self.bot_task.done():
                self.bot_task.cancel()
            await asyncio.gather(self.bot_task, return_exceptions=True)
        if self.services is not None:
            await self.services.aclose()
            self.services = None
        if self.http is not None:
            await self.http.close()
            self.http = None


async def run(settings: Settings, *, http_only: bool = False) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A start that fails on a setting (port, token, Discord's address) leaves no database.
    new_paths = [path for path in sqlite_paths(settings.database_url) if not path.exists()]
    app = BotApp(settings, http_only=http_only)
    try:
        await app.start()
    except WebServerError as err:
        remove_new(new_paths)
        print(f"Configuration error: {err}", file=sys.stderr)
        return 2
    if http_only:
        await stop.wait()
        log.info("shutting down")
        await app.close()
        log.info("stopped cleanly")
        return 0
    assert app.bot_task is not None
    stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({app.bot_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("shutting down")
    finally:
        stop_task.cancel()
        failure = app.bot_task.exception() if app.bot_task.done() else None
        await app.close()
    if failure is not None:
        line = discord_failure(failure, settings)
        if line is None:
            log.error("the bot stopped on an error", exc_info=failure)
        else:
            remove_new(new_paths)
            print(line, file=sys.stderr)
        return 1
    log.info("stopped cleanly")
    return 0


def remove_new(paths: list[Path]) -> None:
    """Remove what a failed start created: files, then the folders that are left empty."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)


def discord_failure(failure: BaseException, settings: Settings) -> str | None:
    """One line for an operator when Discord could not be reached or refused the bot at
    start (no network, DNS, a wrong DISCORD_API_BASE, a wrong token); None otherwise."""
    base = settings.discord_api_base
    if isinstance(failure, discord.LoginFailure):
        return (
            "DISCORD_TOKEN was rejected by Discord (401 Unauthorized): reset the bot token "
            "in the developer portal (Bot > Reset Token) and set it again."
        )
    if isinstance(failure, discord.HTTPException):
        url = getattr(failure.response, "url", base)
        reason = failure.text or getattr(failure.response, "reason", None) or ""
        answer = f"{failure.status} {reason}".strip()
        hint = "check DISCORD_API_BASE"
        if settings.discord_guild_id is not None and "/guilds/" in str(url):
            hint = (
                "check DISCORD_GUILD_ID and that the bot is in that server, invited with "
                "the applications.commands scope"
            )
        return f"Discord answered {answer} to {url}: {hint}."
    if isinstance(failure, OSError | aiohttp.ClientError | TimeoutError):
        reason = " ".join(str(failure).split()) or type(failure).__name__
        return (
            f"Could not reach Discord at {base} ({reason}): check the network connection, "
            "DNS and DISCORD_API_BASE."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["api-keys"]:
        return keys_cli.main(given[1:])
    args = parse_args(argv)
    try:
        settings = load_settings(require_discord=not args.http_only)
    except SettingsError as err:
        print(f"Configuration error: {err.report()}", file=sys.stderr)
        return 2
    secrets = [
        settings.discord_token,
        settings.replicate_api_token,
        settings.api_token,
        settings.metrics_token,
    ]
    configure_logging(
        settings.log_level,
        [secret.get_secret_value() for secret in secrets if secret is not None],
        all_level=settings.log_level_all,
    )
    if args.http_only and settings.api_token is None:
        log.warning(
            "API_TOKEN is not set: the HTTP API under /image/ is disabled (it answers 503); "
            "set API_TOKEN to a long random string to enable it"
        )
    # The bot never joins voice: no warning that the voice libraries are missing.
    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
    tune_gc()
    # uvloop: the same asyncio, with the loop and its sockets in C; a burst of jobs is
    # mostly socket work (see docs/PERFORMANCE.md).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(settings, http_only=args.http_only))


GC_YOUNG_THRESHOLD = 100_000
"""Allocations between two collections of the youngest generation (CPython's default is
700). A busy bot holds a few hundred thousand objects (hundreds of jobs, their requests,
discord.py's caches) that a collection walks without freeing much: with the default, a
burst of 800 jobs spent about a third of its CPU in the collector; with 20,000, 0.24 s in
12 young and one middle collection; with 100,000, 0.1 s in two, for the same peak
memory."""


def tune_gc() -> None:
    """Move what was built at start (modules, settings) out of the collector's sight, and
    collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


if __name__ == "__main__":
    sys.exit(main())
