"""The one ``replicate.Client`` of the process, and the translation of its failures.

Every call goes through :meth:`ReplicateApi.call`, which turns the client's exceptions
into the domain errors of :mod:`services.replicate.errors` with the token redacted;
except the hot paths (a prediction created, fetched, listed), which
:meth:`ReplicateApi.request_json` sends on the aiohttp session itself and reads into
plain dataclasses, with the same errors. Creates go through
:meth:`ReplicateApi.create`, retried only after a 429.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import httpx
import orjson
import replicate
import yarl
from replicate.__about__ import __version__ as replicate_version
from replicate.exceptions import ReplicateError

try:  # the replicate client validates responses with pydantic's v1 API
    from pydantic.v1 import ValidationError as PydanticValidationError
except ImportError:  # pragma: no cover - pydantic 1 installed directly
    from pydantic import ValidationError as PydanticValidationError  # type: ignore[assignment]

from services import metrics
from services.http_transport import AiohttpTransport
from services.replicate.errors import (
    AuthError,
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    RateLimitedError,
    ReplicateServiceError,
    ReplicateUnavailable,
)
from services.replicate.values import PredictionData, PredictionPage

log = logging.getLogger(__name__)

T = TypeVar("T")

# A Retry-After longer than this is not slept through: the caller hears about the 429.
MAX_RETRY_WAIT = 60.0

# Response metadata that ReplicateError does not keep (Retry-After), recorded by an
# httpx response hook into the holder of the call that is running in this context.
_RESPONSE_META: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "replicate_response_meta", default=None
)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds)


async def _record_response_meta(response: httpx.Response) -> None:
    metrics.replicate_answered(
        response.request.method, response.request.url.path, response.status_code
    )
    meta = _RESPONSE_META.get()
    if meta is not None and response.status_code == 429:
        meta["retry_after"] = _parse_retry_after(response.headers.get("Retry-After"))


def _prediction(data: Any) -> PredictionData:
    try:
        return PredictionData.of(data)
    except ValueError as exc:
        raise ReplicateUnavailable(f"unexpected answer from Replicate: {exc}") from None


def _count_unanswered(exc: httpx.HTTPError) -> None:
    try:
        request = exc.request
    except RuntimeError:  # an error raised without its request
        return
    metrics.replicate_answered(request.method, request.url.path, "error")


class ReplicateApi:
    """The official client over aiohttp (see :mod:`services.http_transport`): the client
    wraps the transport in its retry transport (GETs on 429/503/504 only).

    ``session`` is called per request, so a session replaced or closed meanwhile is never
    used. ``client`` is for the calls themselves, always awaited through :meth:`call`."""

    def __init__(
        self,
        api_token: str,
        *,
        base_url: str,
        request_timeout: float,
        poll_interval: float,
        max_create_retries: int,
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self._token = api_token
        self.max_create_retries = max_create_retries
        self._timeout = httpx.Timeout(request_timeout, connect=min(10.0, request_timeout))
        self._transport = AiohttpTransport(session)
        self.client = replicate.Client(
            api_token=api_token,
            base_url=base_url,
            timeout=self._timeout,
            transport=self._transport,
            event_hooks={
                "request": [self._enforce_timeout],
                "response": [_record_response_meta],
            },
        )
        self.client.poll_interval = poll_interval
        self._session_of = session
        self._base_url = base_url.rstrip("/")
        user_agent = f"replicate-python/{replicate_version}"
        self._headers = {"Authorization": f"Bearer {api_token}", "User-Agent": user_agent}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        # sock_connect, not connect: the wait for one of the session's pooled connections
        # is not a failure (a burst of admitted jobs queues for them).
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(10.0, request_timeout), sock_read=request_timeout
        )

    def __repr__(self) -> str:
        return "ReplicateApi()"

    async def _enforce_timeout(self, request: httpx.Request) -> None:
        # The client sends creates and uploads with timeout=None, which httpx reads as
        # "wait forever": a hung create would block its caller for good. httpx timeouts
        # are per network operation (connect, each read, each write), so a long upload
        # that keeps moving still completes.
        request.extensions["timeout"] = self._timeout.as_dict()

    async def aclose(self) -> None:
        await self._transport.aclose()

    # ------------------------------------------------------------------ predictions

    async def get_prediction(self, prediction_id: str) -> PredictionData:
        return _prediction(
            await self.request_json(
                "GET", f"/v1/predictions/{quote(prediction_id, safe='')}", not_found=NotFoundError
            )
        )

    async def list_predictions(
        self, cursor: str | None = None, *, created_before: datetime | None = None
    ) -> PredictionPage:
        """A page of the account's predictions, newest first; ``cursor`` is the ``next``
        of the page before, None for the first page; ``created_before``: only those
        created before then (a first page)."""
        path = "/v1/predictions"
        if created_before is not None and cursor is None:
            stamp = created_before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            path += f"?created_before={quote(stamp)}"
        if cursor is not None:
            # Only its path and query: the token goes to Replicate's base URL alone.
            path = yarl.URL(cursor).raw_path_qs
        data = await self.request_json("GET", path)
        results = data.get("results") if isinstance(data, dict) else None
        following = data.get("next") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise ReplicateUnavailable("unexpected answer from Replicate: a page without results")
        return PredictionPage(
            [_prediction(item) for item in results],
            following if isinstance(following, str) and following else None,
        )

    async def create_prediction(self, path: str, body: Mapping[str, Any]) -> PredictionData:
        """POST a prediction's create to ``path`` (through :meth:`create` for its retries)."""
        return _prediction(await self.request_json("POST", path, body=body))

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        not_found: type[NotFoundError] = ModelNotFoundError,
    ) -> Any:
        """One request of the hot paths (predictions created, fetched and listed) over
        the aiohttp session, without the client's request and response objects; its
        failures are translated as :meth:`call` translates the client's."""
        url = self._base_url + path
        route = path.partition("?")[0]
        headers = self._headers if body is None else self._json_headers
        data = None if body is None else orjson.dumps(body)
        try:
            async with self._session_of().request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=self._aiohttp_timeout,
                allow_redirects=False,
                ssl=self._transport.ssl_for(url),
            ) as response:
                status = response.status
                content = await response.read()
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ConnectionTimeoutError, aiohttp.SocketTimeoutError, TimeoutError) as exc:
            metrics.replicate_answered(method, route, "error")
            raise ReplicateUnavailable(f"request timed out ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            metrics.replicate_answered(method, route, "error")
            raise ReplicateUnavailable(f"request failed ({type(exc).__name__})") from exc
        metrics.replicate_answered(method, route, status)
        try:
            answer = orjson.loads(content) if content else None
        except ValueError:
            answer = None
            if status < 400:
                raise ReplicateUnavailable(
                    f"unexpected answer from Replicate: HTTP {status}, not JSON"
                ) from None
        if status >= 400:
            problem = answer if isinstance(answer, dict) else {}
            error = ReplicateError(
                type=problem.get("type"),
                title=problem.get("title"),
                detail=problem.get("detail"),
                status=status,
                instance=problem.get("instance"),
            )
            meta = {"retry_after": _parse_retry_after(retry_after)}
            raise self._api_error(error, meta, not_found)
        return answer

    # ------------------------------------------------------------------ calls

    async def create(self, factory: Callable[[], Coroutine[Any, Any, T]], *, what: str) -> T:
        """Run a create call, retrying only after a 429 (the server refused it, so
        nothing was started). Timeouts and 5xx are never retried: they may have
        started a paid job."""
        attempt = 0
        while True:
            try:
                return await self.call(factory())
            except RateLimitedError as exc:
                if attempt >= self.max_create_retries:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else 0.5 * 2**attempt
                if wait > MAX_RETRY_WAIT:
                    raise
                attempt += 1
                log.warning(
                    "%s rate limited; retry %d/%d in %.2fs",
                    what,
                    attempt,
                    self.max_create_retries,
                    wait,
                )
                await asyncio.sleep(wait)

    async def call(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        not_found: type[NotFoundError] = ModelNotFoundError,
    ) -> T:
        """Await one client call and translate every failure into a domain error."""
        meta: dict[str, Any] = {}
        token = _RESPONSE_META.set(meta)
        try:
            return await coro
        except ReplicateError as exc:
            raise self._api_error(exc, meta, not_found) from None
        except httpx.TimeoutException as exc:
            _count_unanswered(exc)
            raise ReplicateUnavailable(f"request timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            _count_unanswered(exc)
            raise ReplicateUnavailable(f"request failed ({type(exc).__name__})") from exc
        except PydanticValidationError as exc:
            raise ReplicateUnavailable(
                f"unexpected answer from Replicate: {self.redact(str(exc))[:300]}"
            ) from None
        finally:
            _RESPONSE_META.reset(token)

    def _api_error(
        self, exc: ReplicateError, meta: Mapping[str, Any], not_found: type[NotFoundError]
    ) -> ReplicateServiceError:
        status = exc.status or 0
        title = self.redact(exc.title or "")
        detail = self.redact(exc.detail or title or f"HTTP {status}")
        message = f"Replicate {status}: {title + ' - ' if title else ''}{detail}"
        if status == 401:
            return AuthError(message)
        if status == 403:
            return AuthError(
                message, user_message="The bot's Replicate account is not allowed to do that."
            )
        if status == 404:
            return not_found(message)
        if status == 422:
            text = f"{title} {detail}".lower()
            if "invalid version" in text or "version does not exist" in text:
                return ModelNotFoundError(message)
            return InvalidInputError(detail)
        if status == 429:
            return RateLimitedError(message, retry_after=meta.get("retry_after"))
        if status == 413:
            return InvalidInputError(detail, user_message="The file is too large for Replicate.")
        if status >= 500:
            return ReplicateUnavailable(message)
        return ReplicateServiceError(message)

    def redact(self, text: str | None) -> str:
        """``text`` without the API token."""
        if not text:
            return ""
        return text.replace(self._token, "[redacted]")
