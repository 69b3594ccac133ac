"""The web application (routes, middleware, shared state) and the server that runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from api.keys import DISCORD_STATUS_KEY, SERVICES_KEY, UPLOADS_KEY, DiscordStatus
from api.problems import problem, problem_middleware, reason_phrase
from api.routes.docs import add_docs_routes
from api.routes.generate import generate
from api.routes.health import OPENAPI_PATH, PROBES_KEY, CachedProbes, healthz, openapi, ping
from api.routes.metrics import metrics_route
from api.routes.train import train
from api.routes.trainings import cancel_training, get_training
from api.routes.upscale import upscale
from api.routes.usage import usage
from api.routes.webhooks import MAX_WEBHOOK_BODY, replicate_webhook
from services.app import Services

log = logging.getLogger(__name__)

#: Uploads written to disk at the same time; more are told to come back later.
MAX_CONCURRENT_UPLOADS = 4
#: Idle connections between two requests are closed after this many seconds.
KEEPALIVE_TIMEOUT = 30.0


def create_web_app(
    services: Services, *, discord_status: DiscordStatus = lambda: None
) -> web.Application:
    app = web.Application(client_max_size=MAX_WEBHOOK_BODY, middlewares=[problem_middleware])
    app[SERVICES_KEY] = services
    app[DISCORD_STATUS_KEY] = discord_status
    app[UPLOADS_KEY] = asyncio.Semaphore(MAX_CONCURRENT_UPLOADS)
    app[PROBES_KEY] = CachedProbes(services)
    app.router.add_get("/ping", ping, allow_head=False)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
    app.router.add_post("/webhooks/replicate", replicate_webhook)
    app.router.add_post("/image/generate", generate)
    app.router.add_post("/image/upscale", upscale)
    app.router.add_post("/image/train", train)
    app.router.add_get("/image/train/{id}", get_training, allow_head=False)
    app.router.add_post("/image/train/{id}/cancel", cancel_training)
    app.router.add_get("/usage", usage, allow_head=False)
    app.router.add_get("/metrics", metrics_route, allow_head=False)
    add_docs_routes(app, OPENAPI_PATH)
    return app


class WebServerError(Exception):
    """The server could not listen; ``str()`` is one line for an operator."""


class _ProblemRequestHandler(RequestHandler):
    """Answers what never reaches the application (a request aiohttp cannot parse, an
    error past the middleware) with a short problem+json that quotes no request bytes.

    aiohttp's own answer to a malformed request echoes the offending header line, and
    its log line carries it in the traceback: an ``Authorization`` header ending in a
    bare CR would put the API token in both."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, HttpProcessingError):
            log.debug(
                "refused a malformed request from %s (%s)", request.remote, type(exc).__name__
            )
            detail = "The request is not valid HTTP/1.1."
        else:
            if exc is not None:
                log.error("error handling a request from %s", request.remote, exc_info=exc)
            detail = "The request could not be handled."
        response = problem(status, reason_phrase(status), detail)
        response.force_close()
        return response


class _ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class _AppRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections use :class:`_ProblemRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ProblemServer
        return server


class WebServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = _AppRunner(
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
