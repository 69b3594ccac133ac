"""Point discord.py at another Discord host (a REST proxy, or a local emulator).

discord.py has no public setting for either address, so the two undocumented class
attributes it reads are patched here and nowhere else; ``tests/test_discord_endpoints.py``
fails loudly if an upgrade moves them.
"""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl

DEFAULT_API_BASE = "https://discord.com/api/v10"
DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg/"


def point_discord_at(api_base: str, gateway_url: str) -> None:
    """Set the REST base and the gateway URL for every client in this process.

    Must run before login: routes read ``Route.BASE`` when they are built, and the
    websocket reads ``DEFAULT_GATEWAY`` when it connects or reconnects."""
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def discord_endpoints() -> tuple[str, str]:
    """The REST base and gateway URL in use, to give back to :func:`point_discord_at`."""
    return discord.http.Route.BASE, str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
