"""Entry point: ``python bot.py`` runs the Discord bot (and its web server when enabled);
``python bot.py --http-only`` runs the web server alone, without a Discord token.

Shared resources (one aiohttp session, the Replicate service, the store) are built in
:func:`main` and passed into the bot, as in discord.py's ``advanced_startup`` example.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import pkgutil
import signal
import sys
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import discord
from discord.ext import commands

import cogs
from api import WebServer, WebServerError, create_web_app, keys_cli
from cogs._common import BotTree
from cogs._discord_endpoints import point_discord_at
from services.app import Services, build_services
from services.background import BackgroundWork
from services.settings import Settings, SettingsError, configure_logging, load_settings

if TYPE_CHECKING:
    from cogs.generate import Generate

log = logging.getLogger("bot")

COMMAND_HASH_KEY = "command_sync_hash:{application_id}"


class ImageBot(commands.Bot):
    def __init__(self, services: Services) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=BotTree,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
        )
        self.services = services
        self.settings: Settings = services.settings

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
        """Guild sync on every start when a dev guild is set; else global, only on change.

        Global syncs are rate limited and take time to spread, so the hash of the last
        synced payload is kept in the store and a start with the same commands skips it."""
        guild_id = self.settings.discord_guild_id
        if guild_id is not None:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild_id)
            return
        payload = json.dumps(self.command_payload(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(payload.encode()).hexdigest()
        key = COMMAND_HASH_KEY.format(application_id=self.application_id)
        if await self.services.store.get_meta(key) == digest:
            log.info("global commands unchanged since the last sync; not syncing")
            return
        synced = await self.tree.sync()
        await self.services.store.set_meta(key, digest)
        log.info("synced %d global commands", len(synced))

    async def on_ready(self) -> None:
        log.info("ready as %s in %d guilds", self.user, len(self.guilds))


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

    def discord_connected(self) -> bool | None:
        if self.bot is None:
            return None
        return self.bot.is_ready() and not self.bot.is_closed()

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        try:
            self.services = await build_services(
                self.settings, self.http, with_discord=not self.http_only
            )
            await self.services.keeper.register()
            if self.settings.web_enabled or self.http_only:
                self.web = WebServer(
                    create_web_app(self.services, discord_status=self.discord_connected),
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
    app = BotApp(settings, http_only=http_only)
    try:
        await app.start()
    except WebServerError as err:
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
    if isinstance(failure, discord.LoginFailure):
        print(
            "DISCORD_TOKEN was rejected by Discord: reset the bot token in the developer "
            "portal and set it again.",
            file=sys.stderr,
        )
        return 2
    if failure is not None:
        log.error("the bot stopped on an error", exc_info=failure)
        return 1
    log.info("stopped cleanly")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Replicate image bot for Discord, with its HTTP API and webhook receiver."
    )
    parser.add_argument(
        "--http-only",
        action="store_true",
        help="run the web server alone (HTTP API, webhooks, health), without Discord; "
        "DISCORD_TOKEN is not needed. Listens on HTTP_HOST:HTTP_PORT (default 8080).",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["api-keys"]:
        return keys_cli.main(given[1:])
    args = parse_args(argv)
    try:
        settings = load_settings(require_discord=not args.http_only)
    except SettingsError as err:
        print(f"Configuration error: {err}", file=sys.stderr)
        return 2
    secrets = [
        settings.discord_token,
        settings.replicate_api_token,
        settings.api_token,
        settings.metrics_token,
    ]
    configure_logging(
        settings.log_level, [secret.get_secret_value() for secret in secrets if secret is not None]
    )
    return asyncio.run(run(settings, http_only=args.http_only))


if __name__ == "__main__":
    sys.exit(main())
