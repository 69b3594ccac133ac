"""The open routes: ``GET /ping``, ``GET /healthz`` and ``GET /openapi.json``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from api.keys import DISCORD_STATUS_KEY
from services.app import Services

OPENAPI_PATH = Path(__file__).resolve().parents[1] / "openapi.json"
#: Least seconds between two probes of the store and of Replicate.
PROBE_INTERVAL = 10.0


class CachedProbes:
    """The store and Replicate probes of ``/healthz``, run at most once per ``interval``
    seconds whatever the request rate: requests that arrive during a probe wait for it,
    later ones get its result until it is ``interval`` old. An open route must not turn
    a burst of requests into a burst of calls to Replicate."""

    def __init__(
        self,
        services: Services,
        *,
        interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.services = services
        self.interval = interval
        self.clock = clock
        self.probes = 0
        self._lock = asyncio.Lock()
        self._result: tuple[bool, bool] | None = None
        self._started_at = 0.0

    def _fresh(self) -> tuple[bool, bool] | None:
        if self._result is not None and self.clock() - self._started_at < self.interval:
            return self._result
        return None

    async def check(self) -> tuple[bool, bool]:
        """``(store_ok, replicate_ok)`` of the latest probe, probing when it is stale."""
        result = self._fresh()
        if result is not None:
            return result
        async with self._lock:
            result = self._fresh()
            if result is None:
                started_at = self.clock()
                self.probes += 1
                result = await self._probe()
                self._result, self._started_at = result, started_at
        return result

    async def _probe(self) -> tuple[bool, bool]:
        store_ok = await self.services.store.ping()
        try:
            await self.services.replicate.ping(timeout=2.0)
            replicate_ok = True
        except Exception:
            replicate_ok = False
        return store_ok, replicate_ok


PROBES_KEY = web.AppKey("health_probes", CachedProbes)


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong", content_type="text/plain")


async def healthz(request: web.Request) -> web.Response:
    discord = request.app[DISCORD_STATUS_KEY]()
    discord_connected = None if discord is None else bool(discord["connected"])
    store_ok, replicate_ok = await request.app[PROBES_KEY].check()
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
