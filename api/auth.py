"""``Authorization: Bearer <key>`` on the authenticated routes (``/image/...``, ``/usage``).

A key is ``API_TOKEN`` (the key named ``default``) or one made with ``python bot.py
api-keys create``. With neither, those routes answer 503, so the API is never open by
default."""

from __future__ import annotations

from functools import wraps

from aiohttp import web

from api.keys import API_KEY, SERVICES_KEY, USER_KEY
from api.problems import Handler, Problem
from services.api_keys import token_user_key


def api_user_key(token: str) -> str:
    """The key under which ``API_TOKEN``'s quotas and records are kept; never the token."""
    return token_user_key(token)


def requires_token(handler: Handler) -> Handler:
    """A valid key in ``Authorization: Bearer``; ``API_TOKEN`` is compared in constant time."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        keys = request.app[SERVICES_KEY].api_keys
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        given = given.strip()
        key = await keys.authenticate(given) if scheme.lower() == "bearer" and given else None
        if key is None:
            if not await keys.enabled():
                raise Problem(503, "HTTP API disabled: set API_TOKEN", title="HTTP API disabled")
            if scheme.lower() != "bearer" or not given:
                raise Problem(
                    401,
                    "Send the API token as 'Authorization: Bearer <API_TOKEN>'.",
                    headers={"WWW-Authenticate": 'Bearer realm="image-api"'},
                )
            raise Problem(
                401,
                "The API token is not valid.",
                headers={"WWW-Authenticate": 'Bearer realm="image-api", error="invalid_token"'},
            )
        request[USER_KEY] = key.user_key
        request[API_KEY] = key
        return await handler(request)

    return wrapper
