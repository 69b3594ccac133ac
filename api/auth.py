"""``Authorization: Bearer <API_TOKEN>`` on the ``/image/`` routes.

With ``API_TOKEN`` unset they answer 503, so the API is never open by default."""

from __future__ import annotations

import hashlib
import hmac
from functools import wraps

from aiohttp import web

from api.keys import SERVICES_KEY, USER_KEY
from api.problems import Handler, Problem


def api_user_key(token: str) -> str:
    """The key under which the API's quotas and records are kept; never the token itself."""
    return "api:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def requires_token(handler: Handler) -> Handler:
    """``Authorization: Bearer <API_TOKEN>``, compared in constant time."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        configured = request.app[SERVICES_KEY].settings.api_token
        if configured is None:
            raise Problem(503, "HTTP API disabled: set API_TOKEN", title="HTTP API disabled")
        expected = configured.get_secret_value()
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Problem(
                401,
                "Send the API token as 'Authorization: Bearer <API_TOKEN>'.",
                headers={"WWW-Authenticate": 'Bearer realm="image-api"'},
            )
        if not hmac.compare_digest(_utf8(given.strip()), _utf8(expected)):
            raise Problem(
                401,
                "The API token is not valid.",
                headers={"WWW-Authenticate": 'Bearer realm="image-api", error="invalid_token"'},
            )
        request[USER_KEY] = api_user_key(expected)
        return await handler(request)

    return wrapper


def _utf8(text: str) -> bytes:
    # Header values may carry any byte; they must not crash the comparison.
    return text.encode("utf-8", "replace")
