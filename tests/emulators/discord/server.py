"""The REST server: the route groups put together, and the middlewares around every
request (records, scripted faults, Discord's JSON errors, OpenAPI validation)."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.emulators.discord.common import (
    API_PREFIX,
    MAX_REQUEST_SIZE,
    DiscordAPIError,
    json_response,
    skip_spec,
)
from tests.emulators.discord.rest_channels import ChannelRoutes
from tests.emulators.discord.rest_commands import CommandRoutes
from tests.emulators.discord.rest_interactions import InteractionRoutes
from tests.emulators.discord.rest_misc import MiscRoutes
from tests.emulators.discord.state import IN_REQUEST
from tests.emulators.spec import validation_middleware

log = logging.getLogger(__name__)


@dataclass
class RequestRecord:
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    at: float
    status: int = 0


@dataclass
class FaultRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float | None
    via: bool
    remaining: int
    code: int | None
    message: str | None
    hits: int = 0


class RestServer(CommandRoutes, InteractionRoutes, ChannelRoutes, MiscRoutes):
    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_REQUEST_SIZE,
            middlewares=[
                self._outer_middleware,
                validation_middleware(self.checker),
                self._inner_middleware,
            ],
        )
        router = app.router
        router.add_get("/gateway", self.gateway.handle)
        self._add_misc_routes(router)
        self._add_command_routes(router)
        self._add_interaction_routes(router)
        self._add_channel_routes(router)
        router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    @web.middleware
    async def _outer_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            skip_spec(request)  # gateway, attachment downloads: not in the document
            return await handler(request)
        record = RequestRecord(
            request.method, request.path[len(API_PREFIX) :], dict(request.query), time.monotonic()
        )
        self.requests.append(record)
        token = IN_REQUEST.set(True)
        self._inflight += 1
        try:
            response = await handler(request)
            record.status = response.status
            # Put the answer on the wire before waking the test: a test that reacts to
            # this change (say, clicks a button the bot just added) must not overtake the
            # answer that tells the bot about it, as no Discord user could.
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write_eof()
        finally:
            IN_REQUEST.reset(token)
            self._inflight -= 1
            await self._notify()
        return response

    @web.middleware
    async def _inner_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        path = request.path[len(API_PREFIX) :]
        fault = self._take_fault(request.method, path)
        if fault is not None:
            return self._fault_response(request, fault)
        try:
            return await handler(request)
        except DiscordAPIError as err:
            reason = getattr(err, "reason", None)
            if reason:
                self.rejections.append((request.method, path, reason))
            return json_response(
                {"message": err.message, "code": err.code}, err.status, err.headers
            )
        except web.HTTPException:
            raise
        except Exception as exc:
            # An emulator bug, or a payload shape it did not expect: answer at once (a 500
            # would make discord.py retry for seconds) and let the fixture fail the test.
            log.exception("discord emulator failed on %s %s", request.method, path)
            self.internal_errors.append(f"{request.method} {path}: {exc!r}")
            return json_response({"message": "Invalid Form Body", "code": 50035}, 400)

    def _take_fault(self, method: str, path: str) -> FaultRule | None:
        for rule in self._faults:
            if rule.remaining > 0 and rule.method in (method, "*") and rule.pattern.fullmatch(path):
                rule.remaining -= 1
                rule.hits += 1
                return rule
        return None

    def _fault_response(self, request: web.Request, rule: FaultRule) -> web.Response:
        headers: dict[str, str] = {}
        if rule.status == 429:
            retry_after = 0.01 if rule.retry_after is None else rule.retry_after
            body: dict[str, Any] = {
                "message": rule.message or "You are being rate limited.",
                "retry_after": retry_after,
                "global": False,
                "code": rule.code or 0,
            }
            headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
            headers["X-RateLimit-Scope"] = "user"
        else:
            body = {
                "message": rule.message or f"{rule.status}: scripted error",
                "code": rule.code or 0,
            }
            if rule.status >= 500:
                skip_spec(request)  # the document describes no 5xx answers
        if rule.via:
            headers["Via"] = "1.1 google"
        return json_response(body, rule.status, headers)
