"""``GET /usage``: what the calling API key used (the same figures as ``/usage`` in
Discord), and ``GET /metrics`` for Prometheus."""

from __future__ import annotations

import hmac

from aiohttp import web

from api.auth import requires_token
from api.keys import API_KEY, SERVICES_KEY
from api.problems import Problem
from services import metrics


@requires_token
async def usage(request: web.Request) -> web.Response:
    """Today, this month, the last 30 days and each of those days; costs are estimates."""
    key = request[API_KEY]
    report = await request.app[SERVICES_KEY].usage.for_key(key)
    return web.json_response({"key": key.name, **report.as_dict()})


async def metrics_route(request: web.Request) -> web.Response:
    """Prometheus' text format; with ``METRICS_TOKEN``, only for its bearer."""
    services = request.app[SERVICES_KEY]
    token = services.settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), expected
        ):
            raise Problem(
                401,
                "Send METRICS_TOKEN as 'Authorization: Bearer <METRICS_TOKEN>'.",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    metrics.set_activity(*await services.store.active_jobs())
    body, content_type = metrics.render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})
