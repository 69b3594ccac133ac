"""The web application (routes, middleware, shared state) and the server that runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiohttp import web

from api.keys import DISCORD_STATUS_KEY, SERVICES_KEY, UPLOADS_KEY
from api.problems import problem_middleware
from api.routes.docs import add_docs_routes
from api.routes.generate import generate
from api.routes.health import OPENAPI_PATH, healthz, openapi, ping
from api.routes.metrics import metrics_route
from api.routes.train import train
from api.routes.trainings import cancel_training, get_training
from api.routes.usage import usage
from api.routes.webhooks import MAX_WEBHOOK_BODY, replicate_webhook
from services.app import Services

log = logging.getLogger(__name__)

#: Uploads written to disk at the same time; more are told to come back later.
MAX_CONCURRENT_UPLOADS = 4
#: Idle connections between two requests are closed after this many seconds.
KEEPALIVE_TIMEOUT = 30.0


def create_web_app(
    services: Services, *, discord_status: Callable[[], bool | None] = lambda: None
) -> web.Application:
    app = web.Application(client_max_size=MAX_WEBHOOK_BODY, middlewares=[problem_middleware])
    app[SERVICES_KEY] = services
    app[DISCORD_STATUS_KEY] = discord_status
    app[UPLOADS_KEY] = asyncio.Semaphore(MAX_CONCURRENT_UPLOADS)
    app.router.add_get("/ping", ping, allow_head=False)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
    app.router.add_post("/webhooks/replicate", replicate_webhook)
    app.router.add_post("/image/generate", generate)
    app.router.add_post("/image/train", train)
    app.router.add_get("/image/train/{id}", get_training, allow_head=False)
    app.router.add_post("/image/train/{id}/cancel", cancel_training)
    app.router.add_get("/usage", usage, allow_head=False)
    app.router.add_get("/metrics", metrics_route, allow_head=False)
    add_docs_routes(app, OPENAPI_PATH)
    return app


class WebServerError(Exception):
    """The server could not listen; ``str()`` is one line for an operator."""


class WebServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=5, keepalive_timeout=KEEPALIVE_TIMEOUT
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise WebServerError(
                f"HTTP_HOST/HTTP_PORT: cannot listen on {self.host}:{self.port} "
                f"({exc.strerror or exc})."
            ) from None
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("web server listening on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            with contextlib.suppress(Exception):
                await runner.cleanup()
