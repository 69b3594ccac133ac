"""The keys under which the web application and each request keep what handlers share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.api_keys import ApiKey
from services.app import Services

SERVICES_KEY: web.AppKey[Services] = web.AppKey("services", Services)
#: What the Discord front end of this process says of itself: None without one (HTTP
#: only), else ``{"connected": bool, "shard_count": int, "shard_ids": [...], "shards":
#: [{"id", "connected", "latency_ms"}]}``.
DiscordStatus = Callable[[], dict[str, Any] | None]
DISCORD_STATUS_KEY: web.AppKey[DiscordStatus] = web.AppKey("discord_status")
UPLOADS_KEY: web.AppKey[asyncio.Semaphore] = web.AppKey("uploads", asyncio.Semaphore)
USER_KEY: web.RequestKey[str] = web.RequestKey("api_user_key", str)
API_KEY: web.RequestKey[ApiKey] = web.RequestKey("api_key", ApiKey)
