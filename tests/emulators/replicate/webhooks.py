"""Webhook deliveries (signed, in order per job, retried on non-2xx answers) and
:class:`WebhookReceiver`, an endpoint standing in for the project's."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from tests.emulators.replicate.common import bind
from tests.emulators.replicate.model import Job, WebhookDelivery
from tests.emulators.replicate.state import EmulatorState

log = logging.getLogger(__name__)


def sign_webhook(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``v1,<base64>`` Standard Webhooks signature of one delivery: HMAC-SHA256 of
    ``"{id}.{timestamp}.{body}"`` keyed with the base64 part of ``whsec_<base64>``."""
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


class WebhooksMixin(EmulatorState):
    def sign(
        self, body: bytes, msg_id: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        """Standard Webhooks headers for ``body`` signed with this account's secret."""
        msg_id = msg_id or f"msg_{secrets.token_urlsafe(18)}"
        timestamp = int(time.time()) if timestamp is None else timestamp
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(self.webhook_secret, msg_id, timestamp, body),
        }

    def _queue_webhook(self, job: Job, events: tuple[str, ...]) -> None:
        wanted = tuple(e for e in events if e in job.webhook_events)
        if job.webhook and wanted:
            body = json.dumps(job.to_json(self.base_url)).encode()
            queue = self._webhook_queues.get(job.id)
            if queue is None:
                queue = self._webhook_queues[job.id] = asyncio.Queue()
                self._spawn(self._webhook_worker(job, queue))
            queue.put_nowait((wanted, body))

    async def _webhook_worker(
        self, job: Job, queue: asyncio.Queue[tuple[tuple[str, ...], bytes]]
    ) -> None:
        """Deliver one job's events in order, retrying non-2xx answers (same webhook-id)."""
        while True:
            events, body = await queue.get()
            self._delivering += 1
            try:
                await self._deliver(job, events, body)
            finally:
                self._delivering -= 1
                await self._notify()

    async def _deliver(self, job: Job, events: tuple[str, ...], body: bytes) -> None:
        """One delivery, retried with the same webhook-id until a 2xx or the last attempt."""
        assert self._http is not None and job.webhook
        headers = {"Content-Type": "application/json", **self.sign(body)}
        for attempt in range(1, self.webhook_max_attempts + 1):
            headers.update(self.sign(body, headers["webhook-id"]))
            status: int | None = None
            try:
                async with self._http.post(
                    job.webhook,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=5),
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("webhook delivery to %s failed: %r", job.webhook, exc)
            self.webhook_deliveries.append(
                WebhookDelivery(job.webhook, events, body, dict(headers), attempt, status)
            )
            if status is not None and 200 <= status < 300:
                self.counts["webhooks_delivered"] += 1
                await self._notify()
                break
            await self._notify()
            await asyncio.sleep(self.webhook_retry_delay * attempt)


class WebhookReceiver:
    """A tiny HTTP server standing in for the project's webhook endpoint.

    Records every delivery (headers, raw body); ``statuses`` scripts the next answers
    (e.g. ``[500]`` to make the emulator retry), 200 afterwards."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.url = ""
        self._cond = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hooks/replicate", self._handle)
        sock = bind()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/replicate"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        async with self._cond:
            self._cond.notify_all()
        return web.Response(status=status)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        async with self._cond:
            return await asyncio.wait_for(self._cond.wait_for(predicate), timeout)
