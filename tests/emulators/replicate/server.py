"""The two servers (the API over http, output files over https) and the middleware
around every API request: records, the bearer token, scripted faults, errors."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any

import aiohttp
from aiohttp import web

from tests.emulators.replicate.common import ProblemError, bind, problem, reason
from tests.emulators.replicate.routes import Routes
from tests.emulators.spec import validation_middleware

log = logging.getLogger(__name__)


class Server(Routes):
    async def start(self) -> Server:
        api = web.Application(
            middlewares=[validation_middleware(self.checker), self._middleware],
            client_max_size=110 * 1024 * 1024,
        )
        self._add_routes(api.router)
        files = web.Application()
        files.router.add_get("/{path:.*}", self._serve_output)

        api_sock = bind()
        files_sock = bind()
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ssl_ctx)
        for app, sock, ctx in ((api, api_sock, None), (files, files_sock, ssl_ctx)):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock, ssl_context=ctx).start()
            self._runners.append(runner)
        self.base_url = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
        self.files_base_url = f"https://127.0.0.1:{files_sock.getsockname()[1]}"
        self._http = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        self._closing = True
        self._release.set()
        await self._notify()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._http is not None:
            await self._http.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()  # cached: the validation middleware read it first
        try:
            parsed = json.loads(raw) if raw and request.content_type == "application/json" else None
        except ValueError:
            parsed = None
        self.requests.append((request.method, request.path, parsed))
        self._query_strings.append((request.method, request.path, request.query_string))
        self.counts["requests"] += 1
        await self._notify()

        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")

        script = next((s for s in self._scripts if s.matches(request.method, request.path)), None)
        if script is not None:
            script.remaining -= 1
            if script.action == "rate_limit":
                headers = {}
                if script.retry_after is not None:
                    headers["Retry-After"] = f"{script.retry_after:g}"
                return problem(
                    429,
                    "Too Many Requests",
                    "Request was throttled. Your rate limit for creating predictions is "
                    "reduced while you have a low credit balance.",
                    headers=headers,
                )
            if not script.process:
                if script.action == "error":
                    return problem(script.status, reason(script.status), "Scripted failure")
                if script.action == "hang" and await self._hang():
                    return problem(503, "Service Unavailable", "The emulator is closing")

        try:
            response = await handler(request)
        except ProblemError as exc:
            response = problem(exc.status, exc.title, exc.detail)
        except web.HTTPException as exc:  # unknown route or method
            response = problem(exc.status, exc.reason, exc.text or exc.reason)
        except Exception as exc:  # an emulator bug: answer like a 500, fail the test later
            log.exception("emulator error on %s %s", request.method, request.path)
            self.internal_errors.append(f"{request.method} {request.path}: {exc!r}")
            response = problem(500, "Internal Server Error", "Emulator error")

        if script is not None and script.process:
            if script.action == "error":
                return problem(script.status, reason(script.status), "Scripted failure")
            if script.action == "hang" and await self._hang():
                return problem(503, "Service Unavailable", "The emulator is closing")
        if script is not None and script.action == "mangle" and isinstance(response, web.Response):
            assert script.mangle is not None and isinstance(response.body, bytes)
            mangled = script.mangle(json.loads(response.body))
            response = web.json_response(mangled, status=response.status)
        return response

    async def _hang(self) -> bool:
        """Hold the request; True if released because the emulator is closing."""
        self.counts["hung"] += 1
        release = self._release
        await self._notify()
        await release.wait()
        return self._closing
