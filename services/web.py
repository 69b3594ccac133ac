"""The bot's web server: Replicate webhooks, health, and the HTTP API.

One aiohttp application, sharing the process's services (limits, quotas, store) with the
Discord front end. Routes and answers are described in ``services/api_openapi.json``,
served at ``GET /openapi.json``.

- ``GET /ping``, ``GET /healthz``, ``GET /openapi.json``: open.
- ``POST /webhooks/replicate``: authenticated by the delivery's signature.
- ``/image/...``: ``Authorization: Bearer <API_TOKEN>``; with ``API_TOKEN`` unset they
  answer 503, so the API is never open by default.

Every error is ``application/problem+json`` (RFC 9457). Bodies are size-limited and must
arrive in time, so a slow or greedy client cannot hold a connection forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import math
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import cache, wraps
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from services.app import Services
from services.errors import LimitReached, PermissionRefused, UserFacingError
from services.generation import MAX_PROMPT, MAX_SEED, JobState
from services.replicate import (
    GenerationCanceled,
    InvalidInputError,
    InvalidModelError,
    ModelNotFoundError,
    NSFWError,
    RateLimitedError,
    ReplicateServiceError,
    ReplicateUnavailable,
    TrainingState,
    parse_model_ref,
)
from services.settings import ASPECT_RATIOS
from services.store import Training
from services.training import FINAL
from services.web_docs import add_docs_routes
from services.webhooks import WebhookVerificationError
from services.zipcheck import ZipCheckError, ZipTooLarge, download_to_file

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("api_openapi.json")

MAX_WEBHOOK_BODY = 1024 * 1024
#: JSON bodies of the API (a prompt, a few names) are small.
MAX_JSON_BODY = 64 * 1024
#: Each text field of a multipart training request.
MAX_FORM_FIELD = 1024
#: Room for the multipart framing and text fields beside the zip itself.
MULTIPART_OVERHEAD = 64 * 1024
MAX_FORM_PARTS = 10
#: A whole small body must arrive within this time.
BODY_TIMEOUT = 30.0
#: An upload may take long, but must not stall for longer than this between two chunks...
UPLOAD_IDLE_TIMEOUT = 30.0
#: ...nor take longer than this overall.
UPLOAD_TIMEOUT = 600.0
#: Uploads written to disk at the same time; more are told to come back later.
MAX_CONCURRENT_UPLOADS = 4
#: A generation taking longer is canceled (also on Replicate) and answered with 504.
GENERATE_TIMEOUT = 300.0
DEFAULT_TRAIN_STEPS = 1000
#: Idle connections between two requests are closed after this many seconds.
KEEPALIVE_TIMEOUT = 30.0
CHUNK = 64 * 1024

SERVICES_KEY: web.AppKey[Services] = web.AppKey("services", Services)
DISCORD_STATUS_KEY: web.AppKey[Callable[[], bool | None]] = web.AppKey("discord_status")
UPLOADS_KEY: web.AppKey[asyncio.Semaphore] = web.AppKey("uploads", asyncio.Semaphore)
USER_KEY: web.RequestKey[str] = web.RequestKey("api_user_key", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- problems


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
        self.title = title or _reason(status)
        self.headers = headers or {}

    def response(self) -> web.Response:
        return problem(self.status, self.title, self.detail, **self.headers)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


def service_problem(exc: Exception) -> Problem:
    """The answer for an error of the shared services (the same messages as in Discord)."""
    if isinstance(exc, LimitReached):
        return Problem(429, exc.user_message, headers=_retry_after(exc.retry_after))
    if isinstance(exc, PermissionRefused):
        return Problem(403, exc.user_message)
    if isinstance(exc, NSFWError | InvalidInputError | InvalidModelError | ModelNotFoundError):
        return Problem(422, exc.user_message)
    if isinstance(exc, RateLimitedError):
        return Problem(429, exc.user_message, headers=_retry_after(exc.retry_after or 10))
    if isinstance(exc, ReplicateUnavailable | GenerationCanceled):
        return Problem(503, exc.user_message, headers=_retry_after(30))
    if isinstance(exc, ReplicateServiceError):
        # AuthError, ModelFailedError, OutputExpired, OutputTooLarge...: Replicate's side.
        return Problem(502, exc.user_message)
    if isinstance(exc, UserFacingError | ZipCheckError):
        return Problem(422, exc.user_message)
    raise TypeError(f"not a service error: {exc!r}")


SERVICE_ERRORS = (UserFacingError, ZipCheckError, ReplicateServiceError)


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


# --------------------------------------------------------------------------- auth


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


# --------------------------------------------------------------------------- bodies


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes, within :data:`BODY_TIMEOUT`."""
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, f"The request body is larger than {limit} bytes.")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > limit:
                    raise Problem(413, f"The request body is larger than {limit} bytes.")
    except TimeoutError:
        raise Problem(408, "The request body did not arrive in time.") from None
    except (RequestPayloadError, ConnectionError):
        raise Problem(400, "The request body was cut off.") from None
    return bytes(body)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise Problem(415, "Send the body as application/json.")
    raw = await read_body(request, MAX_JSON_BODY)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise Problem(422, "The body must be a JSON object.")
    return data


def _check_fields(
    data: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]
) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        names = ", ".join(f"`{name[:40]}`" for name in unknown[:5])
        raise Problem(422, f"Unknown field(s) {names}; allowed: {', '.join(allowed)}.")
    missing = [name for name in required if data.get(name) in (None, "")]
    if missing:
        raise Problem(422, f"Missing required field(s): {', '.join(missing)}.")


def _string(data: dict[str, Any], name: str, max_length: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Problem(422, f"`{name}` must be a string.")
    if len(value) > max_length:
        raise Problem(422, f"`{name}` is too long ({len(value)} > {max_length} characters).")
    return value


def _integer(value: Any, name: str, low: int, high: int, *, text: bool = False) -> int | None:
    """A whole number in range; ``text=True`` also takes its decimal form (form fields)."""
    if value is None:
        return None
    if text and isinstance(value, str):
        value = value.strip()
        if value.isascii() and value.lstrip("-").isdigit() and len(value) < 20:
            value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Problem(422, f"`{name}` must be a whole number between {low} and {high}.")
    return value


# --------------------------------------------------------------------------- open routes


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong", content_type="text/plain")


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    discord_connected = request.app[DISCORD_STATUS_KEY]()
    store_ok = await services.store.ping()
    try:
        await services.replicate.ping(timeout=2.0)
        replicate_ok = True
    except Exception:
        replicate_ok = False
    body: dict[str, Any] = {
        "store": store_ok,
        "replicate": replicate_ok,
        "discord": "not running" if discord_connected is None else discord_connected,
    }
    healthy = store_ok and replicate_ok and discord_connected is not False
    body["status"] = "ok" if healthy else "degraded"
    return web.json_response(body, status=200 if healthy else 503)


@cache
def openapi_document() -> bytes:
    return OPENAPI_PATH.read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json")


async def replicate_webhook(request: web.Request) -> web.Response:
    """Verify the signature before anything else; a bad one changes nothing."""
    services = request.app[SERVICES_KEY]
    body = await read_body(request, MAX_WEBHOOK_BODY)
    try:
        outcome = await services.trainings.handle_webhook(request.headers, body)
    except WebhookVerificationError as exc:
        log.info("webhook refused: %s", exc)
        return problem(401, "Unauthorized", "Missing, invalid or stale webhook signature.")
    except ReplicateServiceError as exc:
        # The signing secret could not be fetched: Replicate retries the delivery later.
        log.warning("webhook not verified: %s", exc)
        raise Problem(503, "The webhook secret is not available yet.") from None
    return web.json_response({"status": outcome})


# --------------------------------------------------------------------------- generate


async def _no_progress(state: JobState) -> None:
    """The HTTP answer is the finished image: progress is not reported."""


@requires_token
async def generate(request: web.Request) -> web.Response:
    """Prompt in, image out: the same limits, checks and records as ``/generate``."""
    services = request.app[SERVICES_KEY]
    data = await read_json_object(request)
    _check_fields(data, ("prompt", "model", "aspect_ratio", "seed"), ("prompt",))
    prompt = _string(data, "prompt", MAX_PROMPT) or ""
    model_name = _string(data, "model", 200)
    aspect_ratio = _string(data, "aspect_ratio", 10) or "1:1"
    if aspect_ratio not in ASPECT_RATIOS:
        raise Problem(422, f"`aspect_ratio` must be one of {', '.join(ASPECT_RATIOS)}.")
    seed = _integer(data.get("seed"), "seed", 0, MAX_SEED)

    key = request[USER_KEY]
    generations = services.generations
    limit = services.settings.max_output_mb * 1024 * 1024
    deadline = asyncio.timeout(GENERATE_TIMEOUT)
    try:
        await generations.check_limits(key)
        model = await generations.resolve_model(model_name, guild_id=None)
        generation = await generations.create(
            user_key=key,
            prompt=prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            seed=seed,
            source="api",
        )
        log.info("api generation %s with %s", generation.id, model.ref)
        async with deadline:
            outcome = await generations.run(
                generation, _no_progress, size_limit=limit, total_limit=limit
            )
    except SERVICE_ERRORS as exc:
        raise service_problem(exc) from None
    except TimeoutError:
        raise Problem(504, "The image took too long; the generation was canceled.") from None
    if outcome.result is None or not outcome.images:
        if deadline.expired():
            raise Problem(504, "The image took too long; the generation was canceled.")
        raise Problem(
            503, "The generation was canceled (the server is stopping).", headers=_retry_after(60)
        )
    image = outcome.images[0]
    stored = outcome.generation
    seed_used = stored.seed if stored.seed is not None else stored.params.get("seed")
    extension = image.filename.rpartition(".")[2] or "png"
    headers = {
        "X-Seed": str(seed_used),
        "X-Prediction-Id": outcome.result.prediction_id,
        "X-Generation-Id": stored.id,
        "Content-Disposition": f'inline; filename="{stored.id}.{extension}"',
    }
    return web.Response(body=image.data, content_type=image.content_type, headers=headers)


# --------------------------------------------------------------------------- train

TRAIN_FIELDS = ("new_model_name", "trigger_word", "owner", "steps")
TRAIN_REQUIRED = ("new_model_name", "trigger_word")


@requires_token
async def train(request: web.Request) -> web.Response:
    """Zip (uploaded, or named inside TRAIN_DATA_DIR) in; the Replicate training out."""
    services = request.app[SERVICES_KEY]
    uploads = request.app[UPLOADS_KEY]
    if request.content_type not in ("multipart/form-data", "application/json"):
        raise Problem(415, "Send multipart/form-data (with the zip) or application/json.")
    if uploads.locked():
        raise Problem(503, "Too many uploads at once; try again shortly.", headers=_retry_after(30))
    async with uploads:
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="api-train-"))
        try:
            zip_path = folder / "images.zip"
            form = request.content_type == "multipart/form-data"
            if form:
                fields, size = await _receive_multipart(request, zip_path, services)
            else:
                data = await read_json_object(request)
                _check_fields(data, ("file_name", *TRAIN_FIELDS), ("file_name", *TRAIN_REQUIRED))
                file_name = _string(data, "file_name", 1024) or ""
                fields = {name: data.get(name) for name in TRAIN_FIELDS}
                await _check_owner(services, fields.get("owner"))
                size = await asyncio.to_thread(
                    copy_train_file,
                    services.settings.train_data_dir,
                    file_name,
                    zip_path,
                    services.trainings.zip_limits.max_zip_bytes,
                )
            return await _start_training(request, services, fields, zip_path, size, form=form)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)


async def _check_owner(services: Services, owner: Any) -> None:
    """Never train into another account than the configured one."""
    if owner is None or owner == "":
        return
    if not isinstance(owner, str):
        raise Problem(422, "`owner` must be a string.")
    try:
        configured = await services.trainings.owner()
    except ReplicateServiceError as exc:
        raise service_problem(exc) from None
    if owner != configured:
        raise Problem(
            403,
            f"This server trains models under the Replicate account `{configured}` only; "
            "leave `owner` out or set it to that account.",
        )


async def _start_training(
    request: web.Request,
    services: Services,
    fields: dict[str, Any],
    zip_path: Path,
    size: int,
    *,
    form: bool,
) -> web.Response:
    for name in ("new_model_name", "trigger_word"):
        value = fields.get(name)
        if value in (None, ""):
            raise Problem(422, f"Missing required field(s): {name}.")
        if not isinstance(value, str):
            raise Problem(422, f"`{name}` must be a string.")
    steps = _integer(fields.get("steps"), "steps", 100, 4000, text=form) or DEFAULT_TRAIN_STEPS
    key = request[USER_KEY]
    try:
        started = await services.trainings.start(
            zip_path=zip_path,
            trigger_word=fields["trigger_word"],
            model_name=fields["new_model_name"],
            steps=steps,
            user_key=key,
            guild_id=None,
            channel_id=None,
            source="api",
            declared_size=size,
        )
    except SERVICE_ERRORS as exc:
        raise service_problem(exc) from None
    training = started.training
    log.info("api training %s (%s) into %s", training.id, training.training_id, training.model_ref)
    body = training_object(services, training, None)
    body["warnings"] = list(started.report.warnings)
    return web.json_response(
        body, status=201, headers={"Location": f"/image/train/{training.training_id}"}
    )


async def _receive_multipart(
    request: web.Request, zip_path: Path, services: Services
) -> tuple[dict[str, Any], int]:
    """Stream the ``file`` part to ``zip_path`` (size-capped) and read the text fields."""
    max_zip = services.trainings.zip_limits.max_zip_bytes
    if request.content_length is not None and request.content_length > max_zip + (
        MULTIPART_OVERHEAD
    ):
        raise Problem(413, _too_large(max_zip))
    fields: dict[str, Any] = {}
    size: int | None = None
    try:
        async with asyncio.timeout(UPLOAD_TIMEOUT):
            reader = await request.multipart()
            for _ in range(MAX_FORM_PARTS + 1):
                part = await _idle(reader.next())
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise Problem(400, "Nested multipart bodies are not accepted.")
                name = part.name or ""
                if name == "file":
                    if size is not None:
                        raise Problem(422, "Send one zip only, in the part named `file`.")
                    size = await download_to_file(_chunks(part), zip_path, max_zip)
                elif name in TRAIN_FIELDS:
                    if name in fields:
                        raise Problem(422, f"The field `{name}` is sent twice.")
                    fields[name] = await _text_field(part, name)
                else:
                    allowed = ", ".join(("file", *TRAIN_FIELDS))
                    raise Problem(422, f"Unknown part `{name[:40]}`; allowed: {allowed}.")
            else:
                raise Problem(422, f"Too many parts (at most {MAX_FORM_PARTS}).")
    except ZipTooLarge:
        raise Problem(413, _too_large(max_zip)) from None
    except TimeoutError:
        raise Problem(408, "The upload did not arrive in time.") from None
    except (RequestPayloadError, ConnectionError):
        raise Problem(400, "The upload was cut off.") from None
    except (HttpProcessingError, ValueError, AssertionError, LookupError) as exc:
        # aiohttp's multipart parser raises these on malformed framing or headers.
        log.debug("malformed multipart body: %r", exc)
        raise Problem(400, "The multipart body is malformed.") from None
    if size is None:
        raise Problem(422, "Put the training zip in a multipart part named `file`.")
    await _check_owner(services, fields.get("owner"))
    return fields, size


def _too_large(limit: int) -> str:
    return f"The file is larger than the {limit // (1024 * 1024)} MB limit (MAX_TRAIN_ZIP_MB)."


async def _idle(awaitable: Awaitable[Any]) -> Any:
    async with asyncio.timeout(UPLOAD_IDLE_TIMEOUT):
        return await awaitable


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await _idle(part.read_chunk(CHUNK)):
        yield chunk


async def _text_field(part: BodyPartReader, name: str) -> str:
    data = bytearray()
    while chunk := await _idle(part.read_chunk(CHUNK)):
        data += chunk
        if len(data) > MAX_FORM_FIELD:
            raise Problem(413, f"The field `{name}` is larger than {MAX_FORM_FIELD} bytes.")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Problem(422, f"The field `{name}` is not UTF-8 text.") from None


# --------------------------------------------------------------------------- train files


def copy_train_file(base: Path, file_name: str, dest: Path, max_bytes: int) -> int:
    """Copy ``file_name`` from inside ``base`` to ``dest``; return its size. Blocking.

    Only plain relative names are accepted (no ``..``, no absolute path), and every
    component is opened without following symbolic links, relative to the folder opened
    before it: a link anywhere, or a swap of a folder for a link while this runs, is
    refused instead of being followed out of ``base``."""
    parts = _relative_parts(file_name)
    try:
        fd = _open_inside(base, parts)
    except FileNotFoundError:
        raise Problem(404, f"There is no file `{file_name[:200]}` in TRAIN_DATA_DIR.") from None
    except NotADirectoryError:
        raise Problem(404, f"There is no file `{file_name[:200]}` in TRAIN_DATA_DIR.") from None
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            raise Problem(422, "`file_name` must not be or go through a symbolic link.") from None
        raise Problem(422, f"`file_name` cannot be read ({exc.strerror}).") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise Problem(422, "`file_name` must name a regular file.")
    with os.fdopen(fd, "rb") as source:
        if info.st_size > max_bytes:
            raise Problem(422, _too_large(max_bytes))
        copied = 0
        with dest.open("wb") as target:
            while chunk := source.read(1024 * 1024):
                copied += len(chunk)
                if copied > max_bytes:
                    raise Problem(422, _too_large(max_bytes))
                target.write(chunk)
    return copied


#: What opening a link with O_NOFOLLOW fails with (EMLINK on FreeBSD).
_LINK_ERRNOS = {errno.ELOOP, errno.EMLINK}


def _relative_parts(file_name: str) -> list[str]:
    bad = Problem(
        422,
        "`file_name` must be a relative path inside TRAIN_DATA_DIR, "
        "without '..', '\\' or a leading '/'.",
    )
    if not file_name or "\x00" in file_name or "\\" in file_name or file_name.startswith("/"):
        raise bad
    path = PurePosixPath(file_name)
    parts = [part for part in path.parts if part != "."]
    if path.is_absolute() or not parts or any(part == ".." for part in parts):
        raise bad
    if len(parts) > 32 or any(len(part.encode()) > 255 for part in parts):
        raise bad
    return parts


def _open_inside(base: Path, parts: list[str]) -> int:
    """Open ``base/parts...`` read-only, following no link below ``base``."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    directory = getattr(os, "O_DIRECTORY", 0)
    if not nofollow or os.open not in os.supports_dir_fd:  # pragma: no cover - not POSIX
        return _open_inside_portable(base, parts)
    fd = os.open(base, os.O_RDONLY | directory)
    try:
        for index, part in enumerate(parts):
            # Says "link" rather than "not a directory" for a link to a folder; O_NOFOLLOW
            # below still refuses a link that appears after this look.
            if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                raise OSError(errno.ELOOP, "is a symbolic link")
            if index == len(parts) - 1:
                nonblock = getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open
                return os.open(part, os.O_RDONLY | nofollow | nonblock, dir_fd=fd)
            next_fd = os.open(part, os.O_RDONLY | directory | nofollow, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        raise FileNotFoundError(errno.ENOENT, "empty path")
    finally:
        os.close(fd)


def _open_inside_portable(base: Path, parts: list[str]) -> int:  # pragma: no cover
    root = base.resolve(strict=True)
    current = root
    for part in parts:
        current = current / part
        if stat.S_ISLNK(os.lstat(current).st_mode):
            raise OSError(errno.ELOOP, "is a symbolic link")
    current.resolve(strict=True).relative_to(root)
    return os.open(current, os.O_RDONLY)


# --------------------------------------------------------------------------- training state


@requires_token
async def _own_training(request: web.Request) -> Training:
    """The training named in the path (Replicate's id or the local id), if this token
    started it; a 404 otherwise, so that others' trainings cannot even be probed."""
    store = request.app[SERVICES_KEY].store
    ident = request.match_info["id"]
    training = await store.get_training_by_replicate_id(ident) or await store.get_training(ident)
    if training is None or training.user_key != request[USER_KEY]:
        raise Problem(404, f"There is no training `{ident[:100]}` started with this token.")
    return training


async def cancel_training(request: web.Request) -> web.Response:
    """Cancel a running training (Replicate stops billing it); a finished one is
    answered as it is."""
    services = request.app[SERVICES_KEY]
    training = await _own_training(request)
    if training.status not in FINAL:
        try:
            training = await services.trainings.cancel(training.id)
        except ReplicateServiceError:
            raise
        except UserFacingError as exc:
            raise Problem(409, exc.user_message) from None
    return web.json_response(training_object(services, training, None))


async def get_training(request: web.Request) -> web.Response:
    """The training's current state (Replicate's id or the local id), refreshed from
    Replicate while it runs; only trainings started with this token are visible."""
    services = request.app[SERVICES_KEY]
    training = await _own_training(request)
    state: TrainingState | None = None
    if training.training_id and training.status not in FINAL:
        try:
            state = await services.replicate.get_training(training.training_id)
            training = await services.trainings.apply(training, state)
        except ReplicateServiceError as exc:
            # The stored state is still an answer; the tracker catches up later.
            log.warning("could not refresh training %s: %s", training.id, exc)
            state = None
    return web.json_response(training_object(services, training, state))


def training_object(
    services: Services, training: Training, state: TrainingState | None
) -> dict[str, Any]:
    """The training in the shape of Replicate's training object, from the store (plus
    Replicate's latest answer when there is one), with ``local_id`` and ``progress``."""
    trainer = parse_model_ref(services.settings.trainer_version)
    replicate_id = training.training_id or ""
    base = services.replicate.base_url
    body: dict[str, Any] = {
        "id": replicate_id,
        "model": trainer.model,
        "version": trainer.version or "",
        "destination": training.model_ref,
        "status": training.status,
        "input": {
            "input_images": training.params.get("input_images", ""),
            "trigger_word": training.trigger_word,
            "steps": training.steps,
        },
        "error": training.error,
        "source": "api",
        "created_at": _iso(training.created_at),
        "urls": {
            "get": f"{base}/v1/trainings/{replicate_id}",
            "cancel": f"{base}/v1/trainings/{replicate_id}/cancel",
        },
        "local_id": training.id,
        "progress": {"step": training.step, "total": training.total_steps},
    }
    if training.started_at:
        body["started_at"] = _iso(training.started_at)
    if training.completed_at:
        body["completed_at"] = _iso(training.completed_at)
    if training.version or training.weights:
        body["output"] = {
            key: value
            for key, value in (("version", training.version), ("weights", training.weights))
            if value
        }
    if state is not None and state.predict_time is not None:
        body["metrics"] = {"predict_time": state.predict_time}
    return body


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- app


def create_web_app(
    services: Services, *, discord_status: Callable[[], bool | None] = lambda: None
) -> web.Application:
    app = web.Application(client_max_size=MAX_WEBHOOK_BODY, middlewares=[problem_middleware])
    app[SERVICES_KEY] = services
    app[DISCORD_STATUS_KEY] = discord_status
    app[UPLOADS_KEY] = asyncio.Semaphore(MAX_CONCURRENT_UPLOADS)
    app.router.add_get("/ping", ping, allow_head=False)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
    app.router.add_post("/webhooks/replicate", replicate_webhook)
    app.router.add_post("/image/generate", generate)
    app.router.add_post("/image/train", train)
    app.router.add_get("/image/train/{id}", get_training, allow_head=False)
    app.router.add_post("/image/train/{id}/cancel", cancel_training)
    add_docs_routes(app, OPENAPI_PATH)
    return app


class WebServerError(Exception):
    """The server could not listen; ``str()`` is one line for an operator."""


class WebServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=5, keepalive_timeout=KEEPALIVE_TIMEOUT
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise WebServerError(
                f"HTTP_HOST/HTTP_PORT: cannot listen on {self.host}:{self.port} "
                f"({exc.strerror or exc})."
            ) from None
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("web server listening on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            with contextlib.suppress(Exception):
                await runner.cleanup()
