"""The two discord.py internals that DISCORD_API_BASE and DISCORD_GATEWAY_URL rely on.

If an upgrade of discord.py moves or renames them, these tests fail loudly instead of
the bot silently talking to discord.com from a test or behind a proxy."""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl

from cogs._discord_endpoints import (
    DEFAULT_API_BASE,
    DEFAULT_GATEWAY_URL,
    discord_endpoints,
    point_discord_at,
)


def test_discord_py_still_has_the_patched_attributes() -> None:
    assert isinstance(discord.http.Route.BASE, str), "discord.http.Route.BASE moved"
    assert isinstance(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, yarl.URL), (
        "discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY moved"
    )


def test_routes_and_gateway_follow_the_settings() -> None:
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    try:
        point_discord_at("http://127.0.0.1:9/api/v10/", "ws://127.0.0.1:9/gateway")
        route = discord.http.Route("GET", "/users/@me")
        assert route.url == "http://127.0.0.1:9/api/v10/users/@me"
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/gateway"
        assert discord_endpoints() == ("http://127.0.0.1:9/api/v10", "ws://127.0.0.1:9/gateway")
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


def test_saved_endpoints_restore_exactly() -> None:
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    try:
        point_discord_at("http://127.0.0.1:9/api/v10", "ws://127.0.0.1:9/gateway")
        point_discord_at(*discord_endpoints())
        assert discord_endpoints() == ("http://127.0.0.1:9/api/v10", "ws://127.0.0.1:9/gateway")
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
    assert discord_endpoints() == (old_base, str(old_gateway))


def test_defaults_match_discord_py() -> None:
    assert DEFAULT_API_BASE == discord.http.Route.BASE
    assert yarl.URL(DEFAULT_GATEWAY_URL) == discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
