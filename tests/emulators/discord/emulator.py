"""The emulator as tests see it: one object, built from the parts of this package."""

from __future__ import annotations

import logging

from aiohttp import web

from tests.emulators.discord.controls import ControlsMixin
from tests.emulators.discord.driver import DriverMixin
from tests.emulators.discord.server import RestServer

log = logging.getLogger(__name__)


class DiscordEmulator(DriverMixin, ControlsMixin, RestServer):
    """The emulated Discord: state, REST routes, the gateway and the test API.

    Construct it with ``DiscordEmulator(bot_name=..., guild_name=..., channel_name=...,
    validate=...)`` (see :class:`EmulatorState`), then ``await emu.start()`` or use it
    as an async context manager."""

    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.debug("discord emulator listening on %s", self.base_url)

    async def close(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
