"""``GET /metrics``: Prometheus metrics, for its bearer only when ``METRICS_TOKEN`` is set."""

from __future__ import annotations

import hmac

from aiohttp import web

from api.keys import SERVICES_KEY
from api.problems import Problem
from services import metrics


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
