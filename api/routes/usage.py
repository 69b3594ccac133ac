"""``GET /usage``: what the calling API key used (the same figures as ``/usage`` in
Discord)."""

from __future__ import annotations

from aiohttp import web

from api.auth import requires_token
from api.keys import API_KEY, SERVICES_KEY


@requires_token
async def usage(request: web.Request) -> web.Response:
    """Today, this month, the last 30 days and each of those days; costs are estimates."""
    key = request[API_KEY]
    report = await request.app[SERVICES_KEY].usage.for_key(key)
    return web.json_response({"key": key.name, **report.as_dict()})
