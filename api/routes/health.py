"""The open routes: ``GET /ping``, ``GET /healthz`` and ``GET /openapi.json``."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from api.keys import DISCORD_STATUS_KEY, SERVICES_KEY

OPENAPI_PATH = Path(__file__).resolve().parents[1] / "openapi.json"


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong", content_type="text/plain")


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    discord = request.app[DISCORD_STATUS_KEY]()
    discord_connected = None if discord is None else bool(discord["connected"])
    store_ok = await services.store.ping()
    try:
        await services.replicate.ping(timeout=2.0)
        replicate_ok = True
    except Exception:
        replicate_ok = False
    body: dict[str, Any] = {
        "store": store_ok,
        "replicate": replicate_ok,
        "discord": "not running" if discord_connected is None else discord_connected,
    }
    if discord is not None:
        body["shards"] = {
            "count": discord["shard_count"],
            "ids": discord["shard_ids"],
            "local": discord["shards"],
        }
    healthy = store_ok and replicate_ok and discord_connected is not False
    body["status"] = "ok" if healthy else "degraded"
    return web.json_response(body, status=200 if healthy else 503)


@cache
def openapi_document() -> bytes:
    return OPENAPI_PATH.read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json")
