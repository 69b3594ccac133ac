"""The bot's web server: Replicate webhooks, health, and the HTTP API.

One aiohttp application, sharing the process's services with the Discord front end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.app import Services
from services.webhooks import WebhookVerificationError

log = logging.getLogger(__name__)

MAX_WEBHOOK_BODY = 1024 * 1024
SERVICES_KEY: web.AppKey[Services] = web.AppKey("services", Services)
DISCORD_STATUS_KEY: web.AppKey[Callable[[], bool | None]] = web.AppKey("discord_status")


def problem(status: int, title: str, detail: str, **headers: str) -> web.Response:
    """An ``application/problem+json`` error response."""
    return web.json_response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status=status,
        content_type="application/problem+json",
        headers=headers or None,
    )


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong", content_type="text/plain")


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    discord_connected = request.app[DISCORD_STATUS_KEY]()
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
    healthy = store_ok and replicate_ok and discord_connected is not False
    body["status"] = "ok" if healthy else "degraded"
    return web.json_response(body, status=200 if healthy else 503)


async def replicate_webhook(request: web.Request) -> web.Response:
    """Verify the signature before anything else; a bad one changes nothing."""
    services = request.app[SERVICES_KEY]
    body = await request.read()
    try:
        outcome = await services.trainings.handle_webhook(request.headers, body)
    except WebhookVerificationError as exc:
        log.info("webhook refused: %s", exc)
        return problem(401, "Unauthorized", "Missing, invalid or stale webhook signature.")
    return web.json_response({"status": outcome})


def create_web_app(
    services: Services, *, discord_status: Callable[[], bool | None] = lambda: None
) -> web.Application:
    app = web.Application(client_max_size=MAX_WEBHOOK_BODY)
    app[SERVICES_KEY] = services
    app[DISCORD_STATUS_KEY] = discord_status
    app.router.add_get("/ping", ping)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/webhooks/replicate", replicate_webhook)
    return app


class WebServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("web server listening on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
