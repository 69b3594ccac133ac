"""Every error answer is ``application/problem+json`` (RFC 9457).

Handlers raise :class:`Problem`; errors of the shared services become problems through
:func:`service_problem`, with the same messages the Discord front end shows.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from services.errors import LimitReached, PermissionRefused, UserFacingError
from services.replicate import (
    GenerationCanceled,
    InvalidInputError,
    InvalidModelError,
    ModelNotFoundError,
    NSFWError,
    RateLimitedError,
    ReplicateServiceError,
    ReplicateUnavailable,
)
from services.zipcheck import ZipCheckError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, title: str, detail: str, **headers: str) -> web.Response:
    """An ``application/problem+json`` error response."""
    return web.json_response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status=status,
        content_type="application/problem+json",
        headers=headers or None,
    )


class Problem(Exception):
    """Raised by handlers; turned into a problem+json answer by the middleware."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or reason_phrase(status)
        self.headers = headers or {}

    def response(self) -> web.Response:
        return problem(self.status, self.title, self.detail, **self.headers)


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def retry_after(seconds: float | None) -> dict[str, str]:
    """The ``Retry-After`` header for a wait of ``seconds`` (none when unknown)."""
    return {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


SERVICE_ERRORS = (UserFacingError, ZipCheckError, ReplicateServiceError)


def service_problem(exc: Exception) -> Problem:
    """The answer for an error of the shared services (the same messages as in Discord).

    Replicate's errors are looked at first, so that their status stays the same whatever
    base classes they share with the generic errors below."""
    if isinstance(exc, NSFWError | InvalidInputError | InvalidModelError | ModelNotFoundError):
        return Problem(422, exc.user_message)
    if isinstance(exc, RateLimitedError):
        return Problem(429, exc.user_message, headers=retry_after(exc.retry_after or 10))
    if isinstance(exc, ReplicateUnavailable | GenerationCanceled):
        return Problem(503, exc.user_message, headers=retry_after(30))
    if isinstance(exc, ReplicateServiceError):
        # AuthError, ModelFailedError, OutputExpired, OutputTooLarge...: Replicate's side.
        return Problem(502, exc.user_message)
    if isinstance(exc, LimitReached):
        return Problem(429, exc.user_message, headers=retry_after(exc.retry_after))
    if isinstance(exc, PermissionRefused):
        return Problem(403, exc.user_message)
    if isinstance(exc, UserFacingError | ZipCheckError):
        return Problem(422, exc.user_message)
    raise TypeError(f"not a service error: {exc!r}")


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as problem+json: ours, aiohttp's (404, 405, 413...) and unexpected ones,
    which are logged with their traceback and answered without it."""
    try:
        return await handler(request)
    except Problem as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = exc.text or exc.reason
        if exc.status == 404:
            detail = f"There is no route {request.method} {request.path}; see /openapi.json."
        elif exc.status == 405:
            detail = f"{request.method} is not allowed here; allowed: {exc.headers.get('Allow')}."
        elif exc.status == 413:
            detail = "The request body is too large."
        return problem(exc.status, exc.reason, detail, **headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", "Something went wrong; it has been logged.")
