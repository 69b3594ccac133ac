"""Everything this project does with Replicate goes through :class:`ReplicateService`.

One service per process: it owns one ``replicate.Client`` (and so one pool of HTTP
connections) that every coroutine shares, plus one ``httpx.AsyncClient`` without
credentials for downloading outputs. It knows nothing about Discord: callers get plain
dataclasses back and :class:`ReplicateServiceError` subclasses whose ``user_message``
can be shown to an end user as is.

Rules that matter for money and for safety:

- A create (prediction or training) is retried only after a 429, whose request the
  server refused. A timeout or a 5xx may have started a paid job, so it is reported as
  :class:`ReplicateUnavailable` and never retried.
- Predictions are created and then polled explicitly. ``async_run`` with ``Prefer: wait``
  returns an empty output for a prediction that is still ``processing``.
- Outputs are deleted by Replicate after an hour, so they are downloaded as soon as the
  prediction succeeds, with a size limit.
- TLS trust comes from the environment (``SSL_CERT_FILE``), read by httpx when a
  transport is created and by the output downloads' context when first needed; no
  bundle is pinned here.
- The API token never appears in logs, exception messages or reprs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import io
import logging
import math
import mimetypes
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp
import httpx
import replicate
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput
from replicate.prediction import Prediction

try:  # the replicate client validates responses with pydantic's v1 API
    from pydantic.v1 import ValidationError as _PydanticValidationError
except ImportError:  # pragma: no cover - pydantic 1 installed directly
    from pydantic import ValidationError as _PydanticValidationError  # type: ignore[assignment]

from services.http_transport import AiohttpTransport
from services.images import sniff_content_type

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MODEL = "black-forest-labs/flux-schnell"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # Replicate's limit for POST /v1/files
ERROR_TEXT_LIMIT = 300
# A Retry-After longer than this is not slept through: the caller hears about the 429.
MAX_RETRY_WAIT = 60.0
# Polling a prediction is idempotent; this many consecutive failed polls end the wait.
POLL_OUTAGE_LIMIT = 60.0
"""Seconds of failed polls in a row after which a prediction is given up as unreachable:
the job is paid for, so a short outage of Replicate must not lose its images."""
MAX_POLL_BACKOFF = 5.0
DOWNLOAD_CHUNK = 64 * 1024
WEBHOOK_LATE = timedelta(seconds=2)
EARLY_DELIVERIES_KEPT = 256
LIST_POLL_MIN = 3
"""With this many predictions followed at once, one listing of recent predictions per
poll replaces a GET of each: a busy bot's polls stop growing with its load."""
LIST_PAGE_SIZE = 100  # Replicate's page of predictions
LIST_REQUESTS_PER_SECOND = 20.0
"""A ceiling for listing rounds: 1,200 a minute, well under Replicate's 3,000 for GETs."""
# The hardware named when creating a destination model for a LoRA training; Replicate
# replaces it with the trainer's own hardware when the trained version is pushed.
DESTINATION_HARDWARE = "gpu-t4"

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MODEL_REF = re.compile(rf"^(?P<owner>{_NAME})/(?P<name>{_NAME})(?::(?P<version>[0-9a-f]{{64}}))?$")
"""``owner/name`` or ``owner/name:<64 hex version>``, as Replicate names models."""
OWNER = re.compile(rf"^{_NAME}$")
_FULL_VERSION = re.compile(rf"^{_NAME}/{_NAME}:[0-9a-f]{{64}}$")
_SEED = re.compile(r"Using seed:\s*(-?\d+)")
# tqdm-like progress: "label:  42%|####      | 420/1000 [05:01<06:55, 1.40it/s]"
_TQDM = re.compile(r"(?:^|\s|:)(?P<pct>\d{1,3})%\|.*?\|\s*(?P<n>\d+)/(?P<total>\d+)")
_NSFW = re.compile(r"nsfw content", re.IGNORECASE)

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}


# --------------------------------------------------------------------------- errors


class ReplicateServiceError(Exception):
    """Base of every error the service raises.

    ``str(exc)`` is for logs; ``user_message`` is short, plain and safe to show to a
    Discord user. Neither ever contains the API token."""

    default_user_message = "Something went wrong while talking to Replicate."

    def __init__(self, message: str | None = None, *, user_message: str | None = None) -> None:
        self.user_message = user_message or self.default_user_message
        super().__init__(message or self.user_message)


class NSFWError(ReplicateServiceError):
    default_user_message = "The safety filter blocked this image. Try a different prompt."


class InvalidInputError(ReplicateServiceError):
    """Replicate refused the input (422); ``detail`` is Replicate's explanation."""

    default_user_message = "Replicate refused these settings."

    def __init__(self, detail: str, *, user_message: str | None = None) -> None:
        self.detail = detail
        super().__init__(
            f"invalid input: {detail}",
            user_message=user_message or f"Replicate refused these settings: {_trim(detail)}",
        )


class InvalidModelError(ReplicateServiceError):
    default_user_message = (
        "That model name is not valid. Use owner/name, or owner/name:version for a trained model."
    )


class NotFoundError(ReplicateServiceError):
    """Replicate answered 404 for a prediction, training or file."""

    default_user_message = "Replicate could not find that."


class ModelNotFoundError(NotFoundError):
    default_user_message = "That model or version does not exist, or this bot cannot use it."


class AuthError(ReplicateServiceError):
    default_user_message = "Replicate refused the bot's API token. Ask the bot owner to check it."


class RateLimitedError(ReplicateServiceError):
    default_user_message = "Replicate is busy right now. Try again in a moment."

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ReplicateUnavailable(ReplicateServiceError):
    default_user_message = "Replicate cannot be reached right now. Try again later."


class ModelFailedError(ReplicateServiceError):
    """The model ran and failed; ``error`` is its error text, trimmed."""

    default_user_message = "The model failed."

    def __init__(self, error: str | None) -> None:
        self.error = _trim(error or "unknown error")
        super().__init__(
            f"model failed: {self.error}", user_message=f"The model failed: {self.error}"
        )


class GenerationCanceled(ReplicateServiceError):
    default_user_message = "The generation was canceled."


class OutputTooLarge(ReplicateServiceError):
    default_user_message = "The result is too large to download."


class OutputExpired(ReplicateServiceError):
    """The prediction succeeded but its output was already deleted by Replicate."""

    default_user_message = "The result expired before it could be downloaded."


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Account:
    username: str
    name: str
    type: str


@dataclass(frozen=True)
class ModelRef:
    owner: str
    name: str
    version: str | None = None

    @property
    def model(self) -> str:
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return f"{self.model}:{self.version}" if self.version else self.model


@dataclass(frozen=True)
class Progress:
    prediction_id: str
    status: str  # starting | processing | succeeded | failed | canceled
    elapsed: float  # seconds since the prediction was created


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes = field(repr=False)
    content_type: str
    filename: str

    def __repr__(self) -> str:
        return (
            f"GeneratedImage(filename={self.filename!r}, content_type={self.content_type!r}, "
            f"size={len(self.data)})"
        )


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    seed: int | None
    prediction_id: str
    model: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    queue_seconds: float | None = None  # created -> started
    total_seconds: float | None = None  # created -> completed
    predict_time: float | None = None  # metrics.predict_time, what Replicate bills


@dataclass(frozen=True)
class UploadedFile:
    id: str
    url: str
    size: int


@dataclass(frozen=True)
class TrainingState:
    id: str
    status: str
    step: int | None = None
    total: int | None = None
    version: str | None = None  # "owner/name:<64 hex>" once succeeded
    weights: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    predict_time: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


# --------------------------------------------------------------------------- helpers


def parse_model_ref(ref: str) -> ModelRef:
    """Split ``owner/name`` or ``owner/name:<64 hex version>``."""
    match = MODEL_REF.fullmatch(ref.strip()) if isinstance(ref, str) else None
    if not match:
        raise InvalidModelError(f"invalid model reference: {str(ref)[:100]!r}")
    return ModelRef(match["owner"], match["name"], match["version"])


def parse_training_progress(logs: str | None) -> tuple[int, int] | None:
    """The last ``n/N`` step of a tqdm-like progress line in trainer logs.

    Lines whose label mentions training win over other bars (the trainer also shows
    bars for loading checkpoint shards or captioning before it starts training)."""
    if not logs:
        return None
    last_any: tuple[int, int] | None = None
    last_train: tuple[int, int] | None = None
    for line in re.split(r"[\r\n]+", logs):
        for match in _TQDM.finditer(line):
            n, total = int(match["n"]), int(match["total"])
            if total <= 0 or n > total:
                continue
            last_any = (n, total)
            if "train" in line[: match.start("pct")].lower():
                last_train = (n, total)
    return last_train or last_any


def _trim(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds)


def _type_from_url(url: str) -> str | None:
    path = unquote(urlsplit(url).path)
    content_type, _ = mimetypes.guess_type(path)
    if content_type is None and path.lower().endswith(".webp"):
        content_type = "image/webp"
    return content_type


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


# Response metadata that ReplicateError does not keep (Retry-After), recorded by an
# httpx response hook into the holder of the call that is running in this context.
_RESPONSE_META: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "replicate_response_meta", default=None
)


async def _record_response_meta(response: httpx.Response) -> None:
    meta = _RESPONSE_META.get()
    if meta is not None and response.status_code == 429:
        meta["retry_after"] = _parse_retry_after(response.headers.get("Retry-After"))


# --------------------------------------------------------------------------- polling


@dataclass(eq=False)
class _Watched:
    """A prediction being followed; the poller puts each newer state (or the error that
    ends the wait) in ``updates``."""

    prediction: Any
    created_at: datetime | None
    updates: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    webhooked: bool = False
    busy: bool = False
    failures: int = 0
    outage_since: float | None = None
    next_poll: float = 0.0


class _PredictionPoller:
    """One task polls every prediction the process follows, once per ``poll_interval``
    (``list_poll_interval`` while listing: one request covers all, so it can be sooner).

    With few predictions due, each is fetched by id. From ``LIST_POLL_MIN`` on, one
    listing of the newest predictions (100 a page, newest first) answers for all of them,
    so 200 jobs cost a few requests per interval instead of 200; a prediction the listing
    does not show is fetched by id. Requests run in their own tasks, so one that hangs
    holds up only the predictions it covers. Failed polls back off, and are tolerated for
    ``outage_limit`` seconds in a row before the follower hears the error."""

    def __init__(self, service: ReplicateService) -> None:
        self._service = service
        self._watched: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self._rounds: set[asyncio.Task[None]] = set()
        self._early: OrderedDict[str, Mapping[str, Any]] = OrderedDict()

    def watch(self, prediction: Any, *, webhooked: bool = False) -> _Watched:
        watched = _Watched(prediction, _parse_time(prediction.created_at), webhooked=webhooked)
        if webhooked:
            watched.next_poll = time.monotonic() + self._service.webhook_poll_interval
        self._watched[prediction.id] = watched
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="replicate-poller")
        early = self._early.pop(prediction.id, None)
        if early is not None:
            self.offer(early)
        return watched

    def keep_early(self, payload: Mapping[str, Any]) -> None:
        if payload.get("status") not in TERMINAL_STATUSES:
            return
        self._early[str(payload.get("id"))] = payload
        while len(self._early) > EARLY_DELIVERIES_KEPT:
            self._early.popitem(last=False)

    def unwatch(self, watched: _Watched) -> None:
        if self._watched.get(watched.prediction.id) is watched:
            del self._watched[watched.prediction.id]

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._rounds) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while self._watched:
            await asyncio.sleep(self._interval())
            now = time.monotonic()
            due = [w for w in self._watched.values() if not w.busy and w.next_poll <= now]
            for watched in due:
                watched.busy = True
            if len(due) >= LIST_POLL_MIN:
                self._spawn(self._list_round(due))
            else:
                for watched in due:
                    self._spawn(self._get_round(watched))

    def _interval(self) -> float:
        """Seconds to the next round: listings come sooner than single polls (one request
        covers many), but never more than LIST_REQUESTS_PER_SECOND."""
        service, followed = self._service, len(self._watched)
        if followed < LIST_POLL_MIN:
            return service.poll_interval
        pages = math.ceil(followed / LIST_PAGE_SIZE)
        return max(service.list_poll_interval, pages / LIST_REQUESTS_PER_SECOND)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    async def _list_round(self, batch: list[_Watched]) -> None:
        try:
            found = await self._list(batch)
        except BaseException as exc:
            for watched in batch:
                self._failed(watched, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for watched in batch:
            prediction = found.get(watched.prediction.id)
            if prediction is None:
                self._spawn(self._get_round(watched))
            else:
                self._update(watched, prediction)

    async def _list(self, batch: list[_Watched]) -> dict[str, Any]:
        service = self._service
        wanted = {w.prediction.id for w in batch}
        times = [w.created_at for w in batch if w.created_at is not None]
        oldest = min(times) if times else None
        found: dict[str, Any] = {}
        cursor: Any = ...
        pages = 0
        while True:
            page = await service._call(service._client.predictions.async_list(cursor))
            pages += 1
            for prediction in page.results:
                if prediction.id in wanted:
                    found[prediction.id] = prediction
            if len(found) == len(wanted) or not page.next or not page.results:
                break
            last = _parse_time(page.results[-1].created_at)
            if oldest is None or last is None or last < oldest:
                break
            if pages > len(wanted) // len(page.results) + 1:
                break  # others keep creating predictions: fetch the rest by id
            cursor = page.next
        return found

    async def _get_round(self, watched: _Watched) -> None:
        service = self._service
        try:
            prediction = await service._call(
                service._client.predictions.async_get(watched.prediction.id),
                not_found=NotFoundError,
            )
        except BaseException as exc:
            self._failed(watched, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._update(watched, prediction)

    def offer(self, payload: Mapping[str, Any]) -> bool:
        watched = self._watched.get(str(payload.get("id")))
        if watched is None:
            return False
        try:
            prediction = Prediction(**payload)
        except (_PydanticValidationError, TypeError) as exc:
            log.warning("unusable webhook for prediction %s: %s", payload.get("id"), exc)
            return True
        busy = watched.busy
        self._update(watched, prediction, polled=False)
        watched.busy = busy
        return True

    def _update(self, watched: _Watched, prediction: Any, *, polled: bool = True) -> None:
        if polled:
            watched.busy = False
        watched.failures, watched.outage_since = 0, None
        if watched.webhooked:
            watched.next_poll = time.monotonic() + self._service.webhook_poll_interval
        if watched.prediction.status in TERMINAL_STATUSES:
            return
        if polled and watched.webhooked and prediction.status in TERMINAL_STATUSES:
            completed = _parse_time(prediction.completed_at)
            if completed is not None and datetime.now(UTC) - completed > WEBHOOK_LATE:
                self._service._webhook_missed(prediction.id)
        if prediction.status == watched.prediction.status and (
            prediction.status not in TERMINAL_STATUSES
        ):
            return
        watched.prediction = prediction
        watched.updates.put_nowait(prediction)
        if prediction.status in TERMINAL_STATUSES:
            self.unwatch(watched)

    def _failed(self, watched: _Watched, exc: BaseException) -> None:
        """Back off after a poll that failed for a reason that may pass; end the wait for
        any other reason, or when the outage has lasted ``outage_limit``."""
        watched.busy = False
        if not isinstance(exc, Exception):
            return
        if isinstance(exc, ReplicateUnavailable | RateLimitedError):
            now = time.monotonic()
            watched.outage_since = watched.outage_since or now
            watched.failures += 1
            if now - watched.outage_since < self._service.outage_limit:
                log.warning(
                    "poll %d of prediction %s failed: %s",
                    watched.failures,
                    watched.prediction.id,
                    exc,
                )
                backoff = self._service.poll_interval * watched.failures
                watched.next_poll = now + min(MAX_POLL_BACKOFF, backoff)
                return
        elif not isinstance(exc, ReplicateServiceError):
            log.error("polling prediction %s failed", watched.prediction.id, exc_info=exc)
            exc = ReplicateUnavailable(f"polling failed ({type(exc).__name__})")
        watched.updates.put_nowait(exc)
        self.unwatch(watched)


# --------------------------------------------------------------------------- service


class ReplicateService:
    """Async facade over the official ``replicate`` client; one per process."""

    def __init__(
        self,
        api_token: str,
        *,
        base_url: str | None = None,
        poll_interval: float = 0.5,
        list_poll_interval: float = 0.1,
        webhook_poll_interval: float = 5.0,
        max_output_bytes: int = 50 * 1024 * 1024,
        request_timeout: float = 30.0,
        http: aiohttp.ClientSession | None = None,
        max_create_retries: int = 3,
        outage_limit: float = POLL_OUTAGE_LIMIT,
    ) -> None:
        if not api_token:
            raise ValueError("a Replicate API token is required")
        self._token = api_token
        self.base_url = (base_url or "https://api.replicate.com").rstrip("/")
        self.poll_interval = poll_interval
        self.list_poll_interval = min(list_poll_interval, poll_interval)
        self.webhook_poll_interval = webhook_poll_interval
        self._webhooks_missed = 0
        self.max_output_bytes = max_output_bytes
        self.request_timeout = request_timeout
        self.max_create_retries = max_create_retries
        self.outage_limit = outage_limit
        self._timeout = httpx.Timeout(request_timeout, connect=min(10.0, request_timeout))
        # Requests travel over aiohttp (see services.http_transport); the client wraps
        # the transport in its retry transport (GETs on 429/503/504 only).
        self._transport = AiohttpTransport(self._aiohttp)
        self._client = replicate.Client(
            api_token=api_token,
            base_url=self.base_url,
            timeout=self._timeout,
            transport=self._transport,
            event_hooks={
                "request": [self._enforce_timeout],
                "response": [_record_response_meta],
            },
        )
        self._client.poll_interval = poll_interval
        # Outputs are fetched with aiohttp (the process's shared session when given): it
        # costs a fraction of httpx's CPU per request, which counts when many jobs finish
        # together. Separate from the API client on purpose: output hosts never see the
        # token.
        self._http = http
        self._own_http: aiohttp.ClientSession | None = None
        self._download_ssl: ssl.SSLContext | None = None
        self._download_timeout = aiohttp.ClientTimeout(
            total=None, connect=min(10.0, request_timeout), sock_read=request_timeout
        )
        self._webhook_secret: str | None = None
        self._secret_lock = asyncio.Lock()
        self._poller = _PredictionPoller(self)
        self._closed = False

    def __repr__(self) -> str:
        return f"ReplicateService(base_url={self.base_url!r})"

    async def _enforce_timeout(self, request: httpx.Request) -> None:
        # The client sends creates and uploads with timeout=None, which httpx reads as
        # "wait forever": a hung create would block its caller for good. httpx timeouts
        # are per network operation (connect, each read, each write), so a long upload
        # that keeps moving still completes.
        request.extensions["timeout"] = self._timeout.as_dict()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._poller.aclose()
        if self._own_http is not None:
            await self._own_http.close()
        await self._transport.aclose()

    async def __aenter__(self) -> ReplicateService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ account

    async def account(self) -> Account:
        acc = await self._call(self._client.accounts.async_current())
        return Account(username=acc.username, name=acc.name or acc.username, type=acc.type)

    async def ping(self, timeout: float) -> float:  # noqa: ASYNC109 - the API is fixed
        """Round trip of ``GET /v1/account`` in milliseconds.

        Any failure (timeout, refused token, 5xx) raises :class:`ReplicateUnavailable`."""
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await self._call(self._client.accounts.async_current())
        except TimeoutError as exc:
            raise ReplicateUnavailable(f"ping timed out after {timeout:g}s") from exc
        except ReplicateUnavailable:
            raise
        except ReplicateServiceError as exc:
            raise ReplicateUnavailable(f"ping failed: {exc}") from exc
        return (time.perf_counter() - start) * 1000.0

    async def webhook_secret(self) -> str:
        """The account's default webhook signing secret (``whsec_...``), fetched once."""
        if self._webhook_secret is None:
            async with self._secret_lock:
                if self._webhook_secret is None:
                    secret = await self._call(self._client.webhooks.default.async_secret())
                    self._webhook_secret = secret.key
        return self._webhook_secret

    # ------------------------------------------------------------------ generation

    async def generate(
        self,
        model: str,
        prompt: str,
        options: dict[str, Any] | None = None,
        *,
        on_progress: Callable[[Progress], Awaitable[None]] | None = None,
        webhook: str | None = None,
    ) -> GenerationResult:
        """Run ``model`` (``owner/name`` official, or ``owner/name:version`` trained) and
        return its images, downloaded.

        With ``webhook``, Replicate posts the prediction there when it completes (hand
        the delivery to :meth:`offer_prediction`); it is then polled only rarely, in case
        the delivery is lost.

        ``on_progress`` is awaited right after the prediction is created (so the caller
        knows the id and can cancel it) and on every status change. If the caller
        cancels this coroutine the prediction keeps running on Replicate; use
        :meth:`cancel_prediction` with the id from ``on_progress`` to stop it."""
        ref = parse_model_ref(model or DEFAULT_MODEL)
        inputs = {k: v for k, v in (options or {}).items() if v is not None}
        inputs["prompt"] = prompt
        hooks: dict[str, Any] = (
            {"webhook": webhook, "webhook_events_filter": ["completed"]} if webhook else {}
        )

        if ref.version:
            prediction = await self._create(
                lambda: self._client.predictions.async_create(
                    version=ref.version, input=inputs, **hooks
                ),
                what=f"prediction for {ref.model}:{ref.version[:8]}",
            )
        else:
            prediction = await self._create(
                lambda: self._client.models.predictions.async_create(
                    model=(ref.owner, ref.name), input=inputs, **hooks
                ),
                what=f"prediction for {ref.model}",
            )
        log.info("prediction %s created for %s (%s)", prediction.id, ref, prediction.status)
        return await self._follow(
            prediction, inputs, str(ref), on_progress, webhooked=webhook is not None
        )

    def _webhook_missed(self, prediction_id: str) -> None:
        self._webhooks_missed += 1
        level = logging.WARNING if self._webhooks_missed == 1 else logging.DEBUG
        log.log(
            level,
            "prediction %s finished without its webhook arriving: is PUBLIC_URL reachable "
            "from Replicate? (%d so far; such jobs are found by a poll every %.0f s)",
            prediction_id,
            self._webhooks_missed,
            self.webhook_poll_interval,
        )

    def offer_prediction(self, payload: Mapping[str, Any]) -> bool:
        """Take a verified webhook delivery for a prediction this process follows; False
        if it follows no prediction with that id (a training's delivery, for instance)."""
        return self._poller.offer(payload)

    def keep_early_delivery(self, payload: Mapping[str, Any]) -> None:
        """Keep a verified delivery that matched nothing for a little while: a prediction
        can end before the answer to its create has been read, and is then followed."""
        self._poller.keep_early(payload)

    async def resume(
        self,
        prediction_id: str,
        *,
        on_progress: Callable[[Progress], Awaitable[None]] | None = None,
    ) -> GenerationResult:
        """Follow a prediction created earlier (by a process that has since died) to its
        end, and return its images like :meth:`generate`."""
        prediction = await self._call(
            self._client.predictions.async_get(prediction_id), not_found=NotFoundError
        )
        inputs = dict(prediction.input or {})
        return await self._follow(prediction, inputs, str(prediction.model), on_progress)

    async def find_predictions(
        self, *, prompt: str, seed: int | None, since: datetime
    ) -> list[str]:
        """Ids of recent predictions (newest first) with this prompt and seed, created at
        or after ``since``: a create whose answer was lost (the process died waiting)."""
        page = await self._call(self._client.predictions.async_list())
        found: list[str] = []
        for prediction in page.results:
            created = _parse_time(prediction.created_at)
            if created is not None and created < since:
                break
            inputs = prediction.input or {}
            if inputs.get("prompt") == prompt and (seed is None or inputs.get("seed") == seed):
                found.append(prediction.id)
        return found

    async def _follow(
        self,
        prediction: Any,
        inputs: Mapping[str, Any],
        model: str,
        on_progress: Callable[[Progress], Awaitable[None]] | None,
        *,
        webhooked: bool = False,
    ) -> GenerationResult:
        started = time.monotonic()

        async def report(status: str) -> None:
            if on_progress is None:
                return
            try:
                await on_progress(Progress(prediction.id, status, time.monotonic() - started))
            except Exception:  # a failing progress message must not abort a paid job
                log.warning("on_progress failed for prediction %s", prediction.id, exc_info=True)

        if prediction.status in TERMINAL_STATUSES:
            await report(prediction.status)
        else:
            # Followed before the first report, which may take a while (it stores the id):
            # a fast prediction's webhook can arrive meanwhile.
            watched = self._poller.watch(prediction, webhooked=webhooked)
            try:
                await report(prediction.status)
                while prediction.status not in TERMINAL_STATUSES:
                    update = await watched.updates.get()
                    if isinstance(update, BaseException):
                        raise update
                    log.debug("prediction %s: %s", update.id, update.status)
                    prediction = update
                    await report(prediction.status)
            finally:
                self._poller.unwatch(watched)
        if prediction.status == "succeeded" and not prediction.output:
            # A listing may leave the output out; the prediction itself has it.
            prediction = await self._call(
                self._client.predictions.async_get(prediction.id), not_found=NotFoundError
            )

        if prediction.status == "canceled":
            raise GenerationCanceled(f"prediction {prediction.id} was canceled")
        if prediction.status == "failed":
            error = self._redact(prediction.error or "")
            if _NSFW.search(error):
                raise NSFWError(f"prediction {prediction.id}: {_trim(error)}")
            raise ModelFailedError(error)

        images = await self._download_outputs(prediction.id, prediction.output)
        created = _parse_time(prediction.created_at)
        started_at = _parse_time(prediction.started_at)
        completed = _parse_time(prediction.completed_at)
        metrics = prediction.metrics or {}
        predict_time = metrics.get("predict_time")
        return GenerationResult(
            images=images,
            seed=self._seed(inputs, prediction.logs),
            prediction_id=prediction.id,
            model=model,
            created_at=created,
            started_at=started_at,
            completed_at=completed,
            queue_seconds=_seconds(created, started_at),
            total_seconds=_seconds(created, completed),
            predict_time=float(predict_time) if isinstance(predict_time, int | float) else None,
        )

    async def cancel_prediction(self, prediction_id: str) -> None:
        await self._call(
            self._client.predictions.async_cancel(prediction_id), not_found=NotFoundError
        )

    @staticmethod
    def _seed(inputs: Mapping[str, Any], logs: str | None) -> int | None:
        seed = inputs.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
        matches = _SEED.findall(logs or "")
        return int(matches[-1]) if matches else None

    async def _download_outputs(self, prediction_id: str, output: Any) -> list[GeneratedImage]:
        if output is None:
            raise OutputExpired(f"prediction {prediction_id} succeeded without output")
        items = output if isinstance(output, list) else [output]
        if not items:
            raise ModelFailedError("the model returned no images")
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._fetch(item, i)) for i, item in enumerate(items)]
        except BaseExceptionGroup as group_error:
            # Report the first download problem as the domain error it is.
            first = _first_leaf(group_error)
            if isinstance(first, ReplicateServiceError):
                raise first from None
            raise
        return [task.result() for task in tasks]

    async def _fetch(self, item: Any, index: int) -> GeneratedImage:
        url = item.url if isinstance(item, FileOutput) else item
        if not isinstance(url, str):
            raise ModelFailedError("the model returned something that is not an image")
        if url.startswith("data:"):
            data, declared = self._decode_data_url(url)
        elif url.startswith("https:"):
            data = await self._download(url)
            declared = _type_from_url(url)
        else:
            # Replicate serves outputs over https only; anything else is refused.
            raise ModelFailedError("the model returned a link that is not https")
        content_type = sniff_content_type(data) or declared or "application/octet-stream"
        ext = _EXTENSIONS.get(content_type) or (mimetypes.guess_extension(content_type) or ".bin")
        return GeneratedImage(
            data=data, content_type=content_type, filename=f"out-{index}.{ext.lstrip('.')}"
        )

    def _decode_data_url(self, url: str) -> tuple[bytes, str | None]:
        header, sep, payload = url.partition(",")
        if not sep:
            raise ModelFailedError("the model returned a malformed data URL")
        media = header[len("data:") :]
        is_base64 = media.endswith(";base64")
        media_type = media.split(";", 1)[0] or None
        if is_base64 and len(payload) * 3 // 4 > self.max_output_bytes + 3:
            raise OutputTooLarge(f"data URL output exceeds {self.max_output_bytes} bytes")
        try:
            data = base64.b64decode(payload) if is_base64 else unquote(payload).encode("latin-1")
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise ModelFailedError("the model returned a malformed data URL") from exc
        if len(data) > self.max_output_bytes:
            raise OutputTooLarge(f"data URL output exceeds {self.max_output_bytes} bytes")
        return data, media_type

    def _aiohttp(self) -> aiohttp.ClientSession:
        """The process's shared session, or one of this service's own without it (or
        once it is closed, for the last calls of a shutdown)."""
        http = self._http
        if http is None or http.closed:
            if self._own_http is None or self._own_http.closed:
                self._own_http = aiohttp.ClientSession()
            http = self._own_http
        return http

    def _download_session(self) -> tuple[aiohttp.ClientSession, ssl.SSLContext]:
        if self._download_ssl is None:
            # Built on first use so that it reads SSL_CERT_FILE as the environment is then.
            self._download_ssl = ssl.create_default_context()
        return self._aiohttp(), self._download_ssl

    async def _download(self, url: str) -> bytes:
        limit = self.max_output_bytes
        http, context = self._download_session()
        try:
            async with http.get(url, ssl=context, timeout=self._download_timeout) as response:
                if response.status in (404, 410):
                    raise OutputExpired(f"output gone ({response.status})")
                if response.status >= 400:
                    raise ReplicateUnavailable(f"output download failed ({response.status})")
                declared = response.content_length
                if declared is not None and declared > limit:
                    raise OutputTooLarge(f"output is {declared} bytes, limit {limit}")
                buffer = bytearray()
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                    buffer.extend(chunk)
                    if len(buffer) > limit:
                        raise OutputTooLarge(f"output exceeds {limit} bytes")
                return bytes(buffer)
        except TimeoutError as exc:
            raise ReplicateUnavailable("output download timed out") from exc
        except aiohttp.ClientError as exc:
            raise ReplicateUnavailable(f"output download failed: {type(exc).__name__}") from exc

    # ------------------------------------------------------------------ models

    async def model_exists(self, owner: str, name: str) -> bool:
        ref = parse_model_ref(f"{owner}/{name}")
        try:
            await self._call(self._client.models.async_get(ref.owner, ref.name))
        except ModelNotFoundError:
            return False
        return True

    async def ensure_model(self, owner: str, name: str) -> bool:
        """Make sure ``owner/name`` exists; create it private if not. True if created."""
        ref = parse_model_ref(f"{owner}/{name}")
        if await self.model_exists(ref.owner, ref.name):
            return False
        try:
            await self._call(
                self._client.models.async_create(
                    ref.owner, ref.name, visibility="private", hardware=DESTINATION_HARDWARE
                )
            )
        except ReplicateServiceError as exc:
            # Another task may have created it meanwhile (409); anything else is real.
            if isinstance(exc, ReplicateUnavailable) or not await self.model_exists(
                ref.owner, ref.name
            ):
                raise
            return False
        log.info("created private model %s", ref.model)
        return True

    # ------------------------------------------------------------------ files

    async def upload(
        self,
        source: str | Path | BinaryIO,
        *,
        filename: str = "data.zip",
        content_type: str = "application/zip",
    ) -> UploadedFile:
        """Upload a file (a path, or a binary file object) for use as a model input."""
        if isinstance(source, str | Path):
            path = Path(source)
            size = await asyncio.to_thread(lambda: path.stat().st_size)
            if size > MAX_UPLOAD_BYTES:
                raise InvalidInputError(
                    f"file is {size} bytes, limit {MAX_UPLOAD_BYTES}",
                    user_message="The file is too large for Replicate (100 MB at most).",
                )
            fileobj: BinaryIO = io.BytesIO(await asyncio.to_thread(path.read_bytes))
        else:
            fileobj = source
        uploaded = await self._call(
            self._client.files.async_create(fileobj, filename=filename, content_type=content_type),
            not_found=NotFoundError,
        )
        return UploadedFile(id=uploaded.id, url=uploaded.urls.get("get", ""), size=uploaded.size)

    # ------------------------------------------------------------------ trainings

    async def start_training(
        self,
        trainer: str,
        destination: str,
        training_input: dict[str, Any],
        *,
        webhook: str | None = None,
        webhook_events: tuple[str, ...] = ("completed",),
    ) -> TrainingState:
        """Start a training of ``trainer`` (``owner/name:version``) into ``destination``
        (``owner/name``, which must exist: see :meth:`ensure_model`)."""
        ref = parse_model_ref(trainer)
        if not ref.version:
            raise InvalidModelError(f"trainer needs a version: {trainer!r}")
        dest = parse_model_ref(destination)
        if dest.version:
            raise InvalidModelError(f"destination must be owner/name: {destination!r}")
        params: dict[str, Any] = {"destination": dest.model}
        if webhook:
            params["webhook"] = webhook
            params["webhook_events_filter"] = list(webhook_events)
        training = await self._create(
            lambda: self._client.trainings.async_create(
                ref.model, ref.version, training_input, **params
            ),
            what=f"training of {dest.model}",
        )
        log.info("training %s started into %s", training.id, dest.model)
        return self._training_state(training)

    async def get_training(self, training_id: str) -> TrainingState:
        training = await self._call(
            self._client.trainings.async_get(training_id), not_found=NotFoundError
        )
        return self._training_state(training)

    async def cancel_training(self, training_id: str) -> TrainingState:
        training = await self._call(
            self._client.trainings.async_cancel(training_id), not_found=NotFoundError
        )
        return self._training_state(training)

    def training_state_from_payload(self, payload: Mapping[str, Any]) -> TrainingState:
        """A webhook delivery's body is the object ``GET /v1/trainings/{id}`` returns."""
        fields = (
            "id",
            "status",
            "logs",
            "output",
            "error",
            "created_at",
            "started_at",
            "completed_at",
            "metrics",
        )
        return self._training_state(SimpleNamespace(**{k: payload.get(k) for k in fields}))

    def _training_state(self, training: Any) -> TrainingState:
        progress = parse_training_progress(training.logs)
        output = training.output if isinstance(training.output, dict) else {}
        version = output.get("version")
        created = _parse_time(training.created_at)
        started = _parse_time(training.started_at)
        completed = _parse_time(training.completed_at)
        metrics = getattr(training, "metrics", None) or {}
        predict_time = metrics.get("predict_time")
        if not isinstance(predict_time, int | float):
            # The client's Training model drops "metrics"; the run time is what is billed.
            predict_time = _seconds(started, completed)
        return TrainingState(
            id=training.id,
            status=training.status,
            step=progress[0] if progress else None,
            total=progress[1] if progress else None,
            version=version if isinstance(version, str) and _FULL_VERSION.match(version) else None,
            weights=output.get("weights") if isinstance(output.get("weights"), str) else None,
            error=_trim(self._redact(training.error)) if training.error else None,
            created_at=created,
            started_at=started,
            completed_at=completed,
            predict_time=float(predict_time) if predict_time is not None else None,
        )

    # ------------------------------------------------------------------ plumbing

    async def _create(self, factory: Callable[[], Coroutine[Any, Any, T]], *, what: str) -> T:
        """Run a create call, retrying only after a 429 (the server refused it, so
        nothing was started). Timeouts and 5xx are never retried: they may have
        started a paid job."""
        attempt = 0
        while True:
            try:
                return await self._call(factory())
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

    async def _call(
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
            raise ReplicateUnavailable(f"request timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise ReplicateUnavailable(f"request failed ({type(exc).__name__})") from exc
        except _PydanticValidationError as exc:
            raise ReplicateUnavailable(
                f"unexpected answer from Replicate: {self._redact(str(exc))[:300]}"
            ) from None
        finally:
            _RESPONSE_META.reset(token)

    def _api_error(
        self, exc: ReplicateError, meta: Mapping[str, Any], not_found: type[NotFoundError]
    ) -> ReplicateServiceError:
        status = exc.status or 0
        title = self._redact(exc.title or "")
        detail = self._redact(exc.detail or title or f"HTTP {status}")
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

    def _redact(self, text: str | None) -> str:
        if not text:
            return ""
        return text.replace(self._token, "[redacted]")
