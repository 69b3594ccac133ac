"""A local emulator of the Replicate HTTP API, for tests that run the real client.

Two aiohttp servers on 127.0.0.1:

- the API, at the host root (client ``base_url = emu.base_url``), routes under ``/v1``,
  every exchange checked against the official OpenAPI document
  (:mod:`tests.emulators.spec`);
- an HTTPS file server (trustme certificate) for outputs, because the client only turns
  ``https:`` and ``data:`` strings into files: an ``http:`` output stays a plain string.

Behaviour follows the ``replicate`` 1.0.7 client and the real service: problem+json
errors, 401 for a wrong bearer token, ``Prefer: wait`` held up to n seconds, trainings
that need an existing destination and end with ``{version: "owner/name:<64 hex>",
weights}``, a new version on the destination so ``owner/name:version`` can be run,
signed webhook deliveries with retries.

Tests script it with plain attributes and methods (see :class:`ReplicateEmulator`);
they wait on state changes with :meth:`ReplicateEmulator.wait_for`, never with sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import secrets
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import aiohttp
import jsonschema
import trustme
from aiohttp import web
from PIL import Image, ImageDraw
from werkzeug.formparser import MultiPartParser

from services.webhooks import sign_webhook
from tests.emulators.spec import SpecChecker, validation_middleware

log = logging.getLogger(__name__)

TRAINER_MODEL = "ostris/flux-dev-lora-trainer"
# The version Replicate's own "fine-tune FLUX with an API" guide pins.
TRAINER_VERSION_ID = "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497"
TRAINER_VERSION = f"{TRAINER_MODEL}:{TRAINER_VERSION_ID}"
FLUX_SCHNELL = "black-forest-labs/flux-schnell"
FLUX_DEV = "black-forest-labs/flux-dev"

# The two refusals the real models give, verbatim.
NSFW_OFFICIAL = (
    "All generated images contained NSFW content. Try running it again with a different prompt."
)
NSFW_LORA = "NSFW content detected. Try running it again, or try a different prompt."
ZIP_ERROR = "input_images must be a zip file"

DEFAULT_TOKEN = "r8_emulatorToken0123456789abcdefghijklmn"
DEFAULT_USERNAME = "emu-user"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
ALL_EVENTS = frozenset({"start", "output", "logs", "completed"})
CREATE_PATHS = (
    r"/v1/predictions|/v1/models/[^/]+/[^/]+/predictions"
    r"|/v1/models/[^/]+/[^/]+/versions/[^/]+/trainings"
)
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
ASPECT_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]
FORMATS = {
    "webp": ("WEBP", "image/webp"),
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}
BASE_SIDE = 64  # pixels of a 1:1 output; other ratios keep about the same area


# --------------------------------------------------------------------------- schemas


def _cog_schema(
    input_props: dict[str, Any], required: list[str], *, training: bool = False
) -> dict:
    """A trimmed version of the OpenAPI document Cog publishes for a model version."""
    name = "TrainingInput" if training else "Input"
    output: dict[str, Any] = (
        {"type": "object", "title": "TrainingOutput", "properties": {"weights": {"type": "string"}}}
        if training
        else {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
    )
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                name: {
                    "type": "object",
                    "title": name,
                    "required": required,
                    "properties": input_props,
                },
                "Output" if not training else "TrainingOutput": output,
            }
        },
    }


_COMMON_IMAGE_INPUT: dict[str, Any] = {
    "prompt": {"type": "string", "title": "Prompt"},
    "aspect_ratio": {"type": "string", "enum": ASPECT_RATIOS, "default": "1:1"},
    "num_outputs": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1},
    "seed": {"type": "integer"},
    "output_format": {"type": "string", "enum": list(FORMATS), "default": "webp"},
    "output_quality": {"type": "integer", "minimum": 0, "maximum": 100, "default": 80},
    "disable_safety_checker": {"type": "boolean", "default": False},
    "go_fast": {"type": "boolean", "default": True},
    "megapixels": {"type": "string", "enum": ["1", "0.25"], "default": "1"},
}
SCHNELL_SCHEMA = _cog_schema(
    {**_COMMON_IMAGE_INPUT, "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 4}},
    ["prompt"],
)
DEV_SCHEMA = _cog_schema(
    {
        **_COMMON_IMAGE_INPUT,
        "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 28},
        "guidance": {"type": "number", "minimum": 0, "maximum": 10, "default": 3},
        "image": {"type": "string", "format": "uri"},
        "prompt_strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.8},
    },
    ["prompt"],
)
LORA_SCHEMA = _cog_schema(
    {
        **_COMMON_IMAGE_INPUT,
        "aspect_ratio": {"type": "string", "enum": [*ASPECT_RATIOS, "custom"], "default": "1:1"},
        "width": {"type": "integer", "minimum": 256, "maximum": 1440},
        "height": {"type": "integer", "minimum": 256, "maximum": 1440},
        "model": {"type": "string", "enum": ["dev", "schnell"], "default": "dev"},
        "lora_scale": {"type": "number", "minimum": -1, "maximum": 3, "default": 1},
        "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 28},
        "guidance_scale": {"type": "number", "minimum": 0, "maximum": 10, "default": 3},
        "extra_lora": {"type": "string"},
        "extra_lora_scale": {"type": "number", "minimum": -1, "maximum": 3, "default": 1},
        "image": {"type": "string", "format": "uri"},
        "prompt_strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.8},
    },
    ["prompt"],
)
TRAINER_SCHEMA = _cog_schema(
    {
        "input_images": {"type": "string", "format": "uri"},
        "trigger_word": {"type": "string", "default": "TOK"},
        "steps": {"type": "integer", "minimum": 3, "maximum": 6000, "default": 1000},
        "lora_rank": {"type": "integer", "minimum": 1, "maximum": 128, "default": 16},
        "learning_rate": {"type": "number", "default": 0.0004},
        "batch_size": {"type": "integer", "minimum": 1, "default": 1},
        "resolution": {"type": "string", "default": "512,768,1024"},
        "autocaption": {"type": "boolean", "default": True},
        "autocaption_prefix": {"type": "string"},
        "autocaption_suffix": {"type": "string"},
        "caption_dropout_rate": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.05},
        "optimizer": {"type": "string", "default": "adamw8bit"},
    },
    ["input_images"],
    training=True,
)


def _refuse_input(schema: dict, payload: Any) -> web.Response | None:
    """The 422 Replicate answers to a missing or invalid ``input``, or None if it is fine."""
    if not isinstance(payload, dict):
        return _problem(422, "Input validation failed", "- input: Input is required")
    errors = _input_errors(schema, payload)
    if errors:
        return _problem(422, "Input validation failed", "\n".join(errors))
    return None


def _input_errors(schema: dict, payload: Any) -> list[str]:
    """Cog-style validation messages ("- input.num_outputs: ...") for ``payload``."""
    schemas = schema["components"]["schemas"]
    input_schema = schemas.get("Input") or schemas["TrainingInput"]
    validator = jsonschema.Draft7Validator(input_schema)
    lines = []
    for err in sorted(validator.iter_errors(payload), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.path)
        lines.append(f"- input{'.' + where if where else ''}: {err.message}")
    return lines


# --------------------------------------------------------------------------- state


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def _new_id() -> str:
    """Like Replicate's prediction ids: 26 lowercase base32 characters."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]


@dataclass
class Version:
    id: str
    schema: dict
    created_at: datetime = field(default_factory=_now)
    kind: str = "image"  # "image" or "trainer"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": _iso(self.created_at),
            "cog_version": "0.14.1",
            "openapi_schema": self.schema,
        }


@dataclass
class Model:
    owner: str
    name: str
    visibility: str = "public"
    official: bool = False
    description: str | None = None
    hardware: str = "gpu-h100"
    versions: dict[str, Version] = field(default_factory=dict)
    created_at: datetime = field(default_factory=_now)
    run_count: int = 0

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def latest_version(self) -> Version | None:
        return list(self.versions.values())[-1] if self.versions else None

    def to_json(self) -> dict[str, Any]:
        latest = self.latest_version
        body: dict[str, Any] = {
            "url": f"https://replicate.com/{self.ref}",
            "owner": self.owner,
            "name": self.name,
            "visibility": self.visibility,
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "cover_image_url": None,
            "run_count": self.run_count,
            "default_example": None,
            "latest_version": latest.to_json() if latest else None,
            "is_official": self.official,
        }
        if self.description is not None:
            body["description"] = self.description
        return body


@dataclass
class Job:
    """A prediction or a training: same lifecycle, slightly different JSON."""

    kind: str  # "prediction" or "training"
    id: str
    model: str
    version: str
    input: dict[str, Any]
    schema: dict
    status: str = "starting"
    logs: str = ""
    output: Any = None
    error: str | None = None
    data_removed: bool = False
    created_at: datetime = field(default_factory=_now)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    webhook: str | None = None
    webhook_events: frozenset[str] = ALL_EVENTS
    destination: str | None = None
    fail_with: str | None = None  # scripted failure text
    output_bytes: int | None = None  # scripted size of each output image
    seed: int = 0
    step: int = 0

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_json(self, base_url: str) -> dict[str, Any]:
        path = "predictions" if self.kind == "prediction" else "trainings"
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": self.logs,
            "error": self.error,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "source": "api",
            "urls": {
                "get": f"{base_url}/v1/{path}/{self.id}",
                "cancel": f"{base_url}/v1/{path}/{self.id}/cancel",
                "web": f"https://replicate.com/p/{self.id}",
            },
        }
        if self.kind == "prediction":
            body["output"] = self.output
            body["data_removed"] = self.data_removed
        else:
            body["destination"] = self.destination
            if self.output is not None:  # the document types it as an object, never null
                body["output"] = self.output
        if self.started_at:
            body["started_at"] = _iso(self.started_at)
        if self.completed_at:
            body["completed_at"] = _iso(self.completed_at)
            metrics: dict[str, float] = {
                "total_time": (self.completed_at - self.created_at).total_seconds()
            }
            if self.started_at:
                metrics["predict_time"] = (self.completed_at - self.started_at).total_seconds()
            body["metrics"] = metrics
        return body


@dataclass
class StoredFile:
    id: str
    name: str
    content_type: str
    data: bytes = field(repr=False)
    metadata: dict[str, Any]
    created_at: datetime = field(default_factory=_now)

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.data),
            "etag": hashlib.md5(self.data).hexdigest(),
            "checksums": {
                "sha256": hashlib.sha256(self.data).hexdigest(),
                "md5": hashlib.md5(self.data).hexdigest(),
            },
            "metadata": self.metadata,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.created_at + timedelta(days=1)),
            "urls": {"get": f"{base_url}/v1/files/{self.id}"},
        }


@dataclass
class WebhookDelivery:
    url: str
    events: tuple[str, ...]
    body: bytes = field(repr=False)
    headers: dict[str, str]
    attempt: int
    status: int | None  # None: connection failed


@dataclass
class _Script:
    action: str  # "error" | "hang" | "rate_limit" | "mangle"
    method: str
    path: re.Pattern[str]
    remaining: int
    status: int = 500
    retry_after: float | None = None
    process: bool = False
    mangle: Callable[[Any], Any] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and self.method in (method, "*")
            and self.path.fullmatch(path) is not None
        )


# --------------------------------------------------------------------------- images


def _dimensions(aspect_ratio: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in aspect_ratio.split(":"))
    except ValueError:
        w, h = 1, 1
    scale = BASE_SIDE / math.sqrt(w * h)
    return max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)


def render_image(width: int, height: int, fmt: str, seed: int) -> bytes:
    """A small, real, decodable image."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    draw.ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4),
        fill=tuple(rng.randrange(256) for _ in range(3)),
    )
    buffer = io.BytesIO()
    pil_format = FORMATS.get(fmt, FORMATS["webp"])[0]
    image.save(buffer, format=pil_format, **({"quality": 80} if pil_format != "PNG" else {}))
    return buffer.getvalue()


def render_large_png(target_bytes: int) -> bytes:
    """A decodable PNG of about ``target_bytes`` (noise, stored uncompressed)."""
    side = max(8, int(math.sqrt(max(target_bytes - 1024, 192) / 3)))
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


# --------------------------------------------------------------------------- emulator


class ReplicateEmulator:
    """The emulated Replicate API.

    Scripting (all per instance, reset by nothing but the test):

    - ``prediction_mode`` ``"auto"`` (default; finishes after ``prediction_latency``
      seconds) or ``"manual"`` (stays ``starting`` until :meth:`start_prediction`,
      :meth:`complete_prediction`, :meth:`fail_prediction`);
    - ``training_mode`` ``"auto"`` (steps advance every ``training_step_delay`` s) or
      ``"manual"`` (:meth:`advance_training`, :meth:`complete_training`,
      :meth:`fail_training`);
    - ``output_mode`` ``"https"`` or ``"data"``; ``next_output_bytes`` makes the next
      prediction's images decodable PNGs of about that size; :meth:`expire_outputs`;
    - :meth:`fail_next_prediction`, :meth:`rate_limit_next_create`, :meth:`error_next`,
      :meth:`hang_next` (+ :meth:`release_hangs`), :meth:`mangle_next`;
    - observation: ``counts``, ``requests`` [(method, path, json body)],
      ``last_prediction_input``, ``predictions``, ``trainings``, ``models``, ``files``,
      ``webhook_deliveries``, ``output_requests`` (headers seen by the file server),
      :meth:`wait_for`.
    """

    def __init__(
        self,
        ca: trustme.CA | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        username: str = DEFAULT_USERNAME,
    ) -> None:
        self.ca = ca or trustme.CA()
        self.token = token
        self.username = username
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.checker = SpecChecker(
            "replicate", "replicate-openapi.json", "https://api.replicate.com"
        )

        self.prediction_mode = "auto"
        self.training_mode = "auto"
        self.output_mode = "https"
        self.prediction_latency = 0.02
        self.training_step_delay = 0.01
        self.next_output_bytes: int | None = None
        self.list_page_size = 100
        self._query_strings: list[tuple[str, str, str]] = []
        self.webhook_max_attempts = 4
        self.webhook_retry_delay = 0.05

        self.models: dict[str, Model] = {}
        self.predictions: dict[str, Job] = {}
        self.trainings: dict[str, Job] = {}
        self.files: dict[str, StoredFile] = {}
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str, Any]] = []
        self.output_requests: list[tuple[str, dict[str, str]]] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.last_prediction_input: dict[str, Any] | None = None
        self.internal_errors: list[str] = []  # handler crashes; the fixture fails on any

        self._outputs: dict[str, tuple[bytes, str]] = {}
        self._scripts: list[_Script] = []
        self._next_failure: str | None = None
        self._cond = asyncio.Condition()
        self._release = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # One queue per job: a job's deliveries arrive in order, different jobs' at once.
        self._webhook_queues: dict[str, asyncio.Queue[tuple[tuple[str, ...], bytes]]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._runners: list[web.AppRunner] = []
        self.base_url = ""
        self.files_base_url = ""
        self._seed_models()

    def _seed_models(self) -> None:
        schnell = Model("black-forest-labs", "flux-schnell", official=True)
        schnell.versions["hidden"] = Version(secrets.token_hex(32), SCHNELL_SCHEMA)
        dev = Model("black-forest-labs", "flux-dev", official=True)
        dev.versions["hidden"] = Version(secrets.token_hex(32), DEV_SCHEMA)
        trainer = Model("ostris", "flux-dev-lora-trainer", hardware="gpu-h100")
        trainer.versions[TRAINER_VERSION_ID] = Version(
            TRAINER_VERSION_ID, TRAINER_SCHEMA, kind="trainer"
        )
        for model in (schnell, dev, trainer):
            self.models[model.ref] = model

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> ReplicateEmulator:
        api = web.Application(
            middlewares=[validation_middleware(self.checker), self._middleware],
            client_max_size=110 * 1024 * 1024,
        )
        r = api.router
        r.add_get("/v1/account", self._account)
        r.add_get("/v1/webhooks/default/secret", self._secret)
        r.add_post("/v1/models", self._create_model)
        r.add_get("/v1/models/{owner}/{name}", self._get_model)
        r.add_get("/v1/models/{owner}/{name}/versions/{version}", self._get_version)
        r.add_post("/v1/models/{owner}/{name}/predictions", self._create_official_prediction)
        r.add_post("/v1/models/{owner}/{name}/versions/{version}/trainings", self._create_training)
        r.add_post("/v1/predictions", self._create_version_prediction)
        r.add_get("/v1/predictions", self._list_predictions)
        r.add_get("/v1/predictions/{id}", self._get_prediction)
        r.add_post("/v1/predictions/{id}/cancel", self._cancel_prediction)
        r.add_post("/v1/files", self._create_file)
        r.add_get("/v1/files/{id}", self._get_file)
        r.add_get("/v1/trainings/{id}", self._get_training)
        r.add_post("/v1/trainings/{id}/cancel", self._cancel_training)

        files = web.Application()
        files.router.add_get("/{path:.*}", self._serve_output)

        api_sock = _bind()
        files_sock = _bind()
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ssl_ctx)
        for app, sock, ctx in ((api, api_sock, None), (files, files_sock, ssl_ctx)):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock, ssl_context=ctx).start()
            self._runners.append(runner)
        self.base_url = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
        self.files_base_url = f"https://127.0.0.1:{files_sock.getsockname()[1]}"
        self._http = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        self._closing = True
        self._release.set()
        await self._notify()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> ReplicateEmulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ scripting

    def fail_next_prediction(self, error_text: str) -> None:
        """The next prediction created ends ``failed`` with ``error_text``."""
        self._next_failure = error_text

    def rate_limit_next_create(self, retry_after: float | None = 1, count: int = 1) -> None:
        """The next ``count`` creates (predictions, trainings) get a 429 with Retry-After."""
        self._scripts.append(
            _Script("rate_limit", "POST", re.compile(CREATE_PATHS), count, 429, retry_after)
        )

    def error_next(
        self,
        method: str,
        path_regex: str,
        status: int = 500,
        count: int = 1,
        *,
        process: bool = False,
    ) -> None:
        """The next ``count`` requests matching (``path_regex`` full-matches the path)
        get a problem+json ``status``. With ``process=True`` the request is handled
        first (a create then does create the job) and only the answer is replaced."""
        self._scripts.append(
            _Script("error", method.upper(), re.compile(path_regex), count, status, process=process)
        )

    def hang_next(
        self, method: str, path_regex: str, count: int = 1, *, process: bool = False
    ) -> None:
        """The next matching requests get no answer until :meth:`release_hangs` or close
        (they are then handled normally). ``process=True`` handles the request first
        and holds only the answer: the job exists but the caller never hears of it."""
        self._scripts.append(
            _Script("hang", method.upper(), re.compile(path_regex), count, process=process)
        )

    def mangle_next(
        self, method: str, path_regex: str, fn: Callable[[Any], Any], count: int = 1
    ) -> None:
        """Pass the next matching JSON answers through ``fn`` (to produce off-spec ones)."""
        self._scripts.append(
            _Script("mangle", method.upper(), re.compile(path_regex), count, mangle=fn)
        )

    def release_hangs(self) -> None:
        self._release.set()
        self._release = asyncio.Event()

    def expire_outputs(self, *, null_output: bool = True) -> None:
        """Delete every output file (downloads get 404); with ``null_output`` finished
        predictions also lose their output, as Replicate does after an hour."""
        self._outputs.clear()
        if null_output:
            for job in self.predictions.values():
                if job.finished and job.output is not None:
                    job.output = None
                    job.data_removed = True
        self._spawn(self._notify())

    def add_model(
        self, owner: str, name: str, *, visibility: str = "private", with_version: bool = False
    ) -> Model:
        """Create a model directly (no request), optionally with one trained version."""
        model = Model(owner, name, visibility=visibility)
        if with_version:
            version = Version(secrets.token_hex(32), LORA_SCHEMA)
            model.versions[version.id] = version
        self.models[model.ref] = model
        return model

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

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true; re-checked on every state change."""
        async with self._cond:
            return await asyncio.wait_for(self._cond.wait_for(predicate), timeout)

    def webhooks_pending(self) -> int:
        """Deliveries queued and not yet attempted."""
        return sum(queue.qsize() for queue in self._webhook_queues.values())

    def query_strings(self, method: str, path: str) -> list[str]:
        """The query strings of the requests made to exactly ``path``, in order."""
        return [q for m, p, q in self._query_strings if m == method and p == path]

    def request_count(self, method: str, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        return sum(1 for m, p, _ in self.requests if m == method and pattern.fullmatch(p))

    @property
    def last_prediction(self) -> Job | None:
        return list(self.predictions.values())[-1] if self.predictions else None

    @property
    def last_training(self) -> Job | None:
        return list(self.trainings.values())[-1] if self.trainings else None

    # manual predictions

    async def start_prediction(self, prediction_id: str) -> None:
        job = self.predictions[prediction_id]
        await self._update(
            job, status="processing", started_at=_now(), logs=f"Using seed: {job.seed}\n"
        )

    async def complete_prediction(self, prediction_id: str) -> None:
        """Finish a prediction: succeeded with images, or failed if a failure was scripted."""
        job = self.predictions[prediction_id]
        if job.finished:
            return
        if job.status == "starting":
            await self.start_prediction(prediction_id)
        if job.fail_with is not None:
            await self.fail_prediction(prediction_id, job.fail_with)
            return
        output = await self._make_outputs(job)
        steps = 4
        logs = job.logs + "".join(
            f"{int(100 * n / steps):3d}%|{'#' * (10 * n // steps):<10}| {n}/{steps} "
            f"[00:0{n}<00:00, 3.21it/s]\n"
            for n in range(steps + 1)
        )
        await self._update(job, status="succeeded", output=output, logs=logs, completed_at=_now())

    async def fail_prediction(self, prediction_id: str, error: str) -> None:
        job = self.predictions[prediction_id]
        if job.started_at is None:
            job.started_at = _now()
        await self._update(job, status="failed", error=error, completed_at=_now())

    # manual trainings

    async def advance_training(self, training_id: str, step: int) -> None:
        job = self.trainings[training_id]
        if job.finished:
            return
        total = int(job.input.get("steps", 1000))
        changes: dict[str, Any] = {"step": step}
        if job.status == "starting":
            changes.update(status="processing", started_at=_now())
        pct = int(100 * step / total)
        bar = "#" * (pct // 10)
        changes["logs"] = (
            job.logs
            + f"flux_train_replicate: {pct:3d}%|{bar:<10}| {step}/{total} "
            + "[00:42<05:00, 1.40it/s, lr: 4.0e-04 loss: 3.412e-01]\n"
        )
        await self._update(job, **changes)

    async def complete_training(self, training_id: str) -> None:
        """Succeed (or fail, when the input was not a zip): a new version appears on the
        destination model, and the output names it as ``owner/name:<64 hex>``."""
        job = self.trainings[training_id]
        if job.finished:
            return
        if job.fail_with is not None:
            await self.fail_training(training_id, job.fail_with)
            return
        total = int(job.input.get("steps", 1000))
        if job.step < total:
            await self.advance_training(training_id, total)
        destination = self.models[job.destination or ""]
        version = Version(secrets.token_hex(32), LORA_SCHEMA)
        destination.versions[version.id] = version
        weights_path = f"/xezq/{secrets.token_urlsafe(16)}/trained_model.tar"
        self._outputs[weights_path] = (b"emulated lora weights\n", "application/x-tar")
        output = {
            "version": f"{destination.ref}:{version.id}",
            "weights": f"{self.files_base_url}{weights_path}",
        }
        logs = job.logs + "Saved LoRA weights to output/flux_train_replicate\n"
        await self._update(job, status="succeeded", output=output, logs=logs, completed_at=_now())

    async def fail_training(self, training_id: str, error: str) -> None:
        job = self.trainings[training_id]
        if job.started_at is None:
            job.started_at = _now()
        await self._update(job, status="failed", error=error, completed_at=_now())

    # ------------------------------------------------------------------ machinery

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def _update(self, job: Job, **changes: Any) -> None:
        if job.finished and "status" in changes:
            return  # a canceled job stays canceled
        before = (job.status, job.logs, job.output)
        for key, value in changes.items():
            setattr(job, key, value)
        events = []
        if job.logs != before[1]:
            events.append("logs")
        if job.output is not None and job.output != before[2]:
            events.append("output")
        if job.finished and before[0] not in TERMINAL:
            events.append("completed")
        self._queue_webhook(job, tuple(events))
        await self._notify()

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

    async def _make_outputs(self, job: Job) -> list[str]:
        fmt = str(job.input.get("output_format", "webp"))
        count = int(job.input.get("num_outputs", 1))
        width, height = _dimensions(str(job.input.get("aspect_ratio", "1:1")))
        outputs = []
        for index in range(count):
            if job.output_bytes is not None:
                data = await asyncio.to_thread(render_large_png, job.output_bytes)
                ext, content_type = "png", "image/png"
            else:
                data = render_image(width, height, fmt, job.seed + index)
                ext, content_type = fmt, FORMATS.get(fmt, FORMATS["webp"])[1]
            if self.output_mode == "data":
                outputs.append(f"data:{content_type};base64,{base64.b64encode(data).decode()}")
            else:
                path = f"/xezq/{secrets.token_urlsafe(16)}/out-{index}.{ext}"
                self._outputs[path] = (data, content_type)
                outputs.append(f"{self.files_base_url}{path}")
        return outputs

    async def _run_prediction(self, job: Job) -> None:
        await asyncio.sleep(0)
        await self.start_prediction(job.id)
        await asyncio.sleep(self.prediction_latency)
        await self.complete_prediction(job.id)

    async def _run_training(self, job: Job) -> None:
        await asyncio.sleep(self.training_step_delay)
        total = int(job.input.get("steps", 1000))
        await self._update(
            job,
            status="processing",
            started_at=_now(),
            logs="Loading checkpoint shards: 100%|##########| 3/3 [00:02<00:00,  1.31it/s]\n",
        )
        if job.fail_with is not None:
            await asyncio.sleep(self.training_step_delay)
            await self.fail_training(job.id, job.fail_with)
            return
        for quarter in range(5):
            await asyncio.sleep(self.training_step_delay)
            await self.advance_training(job.id, total * quarter // 4)
        await self.complete_training(job.id)

    # ------------------------------------------------------------------ http plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()  # cached: the validation middleware read it first
        try:
            parsed = json.loads(raw) if raw and request.content_type == "application/json" else None
        except ValueError:
            parsed = None
        self.requests.append((request.method, request.path, parsed))
        self._query_strings.append((request.method, request.path, request.query_string))
        self.counts["requests"] += 1
        await self._notify()

        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")

        script = next((s for s in self._scripts if s.matches(request.method, request.path)), None)
        if script is not None:
            script.remaining -= 1
            if script.action == "rate_limit":
                headers = {}
                if script.retry_after is not None:
                    headers["Retry-After"] = f"{script.retry_after:g}"
                return _problem(
                    429,
                    "Too Many Requests",
                    "Request was throttled. Your rate limit for creating predictions is "
                    "reduced while you have a low credit balance.",
                    headers=headers,
                )
            if not script.process:
                if script.action == "error":
                    return _problem(script.status, _reason(script.status), "Scripted failure")
                if script.action == "hang" and await self._hang():
                    return _problem(503, "Service Unavailable", "The emulator is closing")

        try:
            response = await handler(request)
        except _ProblemError as exc:
            response = _problem(exc.status, exc.title, exc.detail)
        except web.HTTPException as exc:  # unknown route or method
            response = _problem(exc.status, exc.reason, exc.text or exc.reason)
        except Exception as exc:  # an emulator bug: answer like a 500, fail the test later
            log.exception("emulator error on %s %s", request.method, request.path)
            self.internal_errors.append(f"{request.method} {request.path}: {exc!r}")
            response = _problem(500, "Internal Server Error", "Emulator error")

        if script is not None and script.process:
            if script.action == "error":
                return _problem(script.status, _reason(script.status), "Scripted failure")
            if script.action == "hang" and await self._hang():
                return _problem(503, "Service Unavailable", "The emulator is closing")
        if script is not None and script.action == "mangle" and isinstance(response, web.Response):
            assert script.mangle is not None and isinstance(response.body, bytes)
            mangled = script.mangle(json.loads(response.body))
            response = web.json_response(mangled, status=response.status)
        return response

    async def _hang(self) -> bool:
        """Hold the request; True if released because the emulator is closing."""
        self.counts["hung"] += 1
        release = self._release
        await self._notify()
        await release.wait()
        return self._closing

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise _ProblemError(400, "Bad Request", "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _ProblemError(400, "Bad Request", "The request body must be a JSON object")
        return body

    def _model_or_404(self, owner: str, name: str) -> Model:
        model = self.models.get(f"{owner}/{name}")
        if model is None or (model.visibility == "private" and model.owner != self.username):
            raise _ProblemError(404, "Not found", "The requested resource could not be found.")
        return model

    def _wait_seconds(self, request: web.Request) -> float | None:
        prefer = request.headers.get("Prefer", "")
        match = re.fullmatch(r"\s*wait(?:=(\d+))?\s*", prefer)
        if not match:
            return None
        return float(match.group(1) or 60)

    async def _answer_created(self, request: web.Request, job: Job) -> web.Response:
        wait = self._wait_seconds(request)
        if wait:
            with contextlib.suppress(TimeoutError):
                await self.wait_for(lambda: job.finished or self._closing, wait)
        return web.json_response(job.to_json(self.base_url), status=201)

    # ------------------------------------------------------------------ handlers

    async def _account(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"type": "user", "username": self.username, "name": "Emulated User"}
        )

    async def _secret(self, request: web.Request) -> web.Response:
        return web.json_response({"key": self.webhook_secret})

    async def _get_model(self, request: web.Request) -> web.Response:
        model = self._model_or_404(request.match_info["owner"], request.match_info["name"])
        return web.json_response(model.to_json())

    async def _create_model(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        owner, name = str(body.get("owner", "")), str(body.get("name", ""))
        missing = [k for k in ("owner", "name", "visibility", "hardware") if not body.get(k)]
        if missing:
            return _problem(422, "Invalid request", f"Missing fields: {', '.join(missing)}")
        if not MODEL_NAME.fullmatch(name):
            return _problem(
                422,
                "Invalid model name",
                "Model names may only contain lowercase letters, numbers, dashes, "
                "underscores, or periods, and must start with a letter or number.",
            )
        if owner != self.username:
            return _problem(
                403, "Forbidden", "You do not have permission to create models for this owner."
            )
        if f"{owner}/{name}" in self.models:
            return _problem(409, "Conflict", "A model with that name and owner already exists.")
        model = Model(
            owner,
            name,
            visibility=str(body["visibility"]),
            hardware=str(body["hardware"]),
            description=body.get("description"),
        )
        self.models[model.ref] = model
        self.counts["models_created"] += 1
        await self._notify()
        return web.json_response(model.to_json(), status=201)

    async def _get_version(self, request: web.Request) -> web.Response:
        model = self._model_or_404(request.match_info["owner"], request.match_info["name"])
        version_id = request.match_info["version"]
        version = next((v for v in model.versions.values() if v.id == version_id), None)
        if version is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        return web.json_response(version.to_json())

    async def _create_official_prediction(self, request: web.Request) -> web.Response:
        model = self._model_or_404(request.match_info["owner"], request.match_info["name"])
        body = await self._json_body(request)
        version = model.latest_version
        if not model.official or version is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        return await self._create_prediction(request, model, "hidden", version, body)

    async def _create_version_prediction(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        ref = str(body.get("version", ""))
        version_id = ref.rsplit(":", 1)[-1]
        for model in self.models.values():
            version = next((v for v in model.versions.values() if v.id == version_id), None)
            if version is not None and version.kind == "image" and not model.official:
                return await self._create_prediction(request, model, version_id, version, body)
        return _problem(
            422,
            "Invalid version",
            "The specified version does not exist (or perhaps you don't have permission to "
            "use it?)",
        )

    async def _create_prediction(
        self, request: web.Request, model: Model, version_label: str, version: Version, body: dict
    ) -> web.Response:
        payload = body.get("input")
        refused = _refuse_input(version.schema, payload)
        if refused is not None:
            return refused
        job = Job(
            kind="prediction",
            id=_new_id(),
            model=model.ref,
            version=version_label,
            input=payload,
            schema=version.schema,
            webhook=body.get("webhook"),
            webhook_events=frozenset(body.get("webhook_events_filter") or ALL_EVENTS),
            seed=int(payload["seed"]) if "seed" in payload else random.randrange(2**31),
            fail_with=self._next_failure,
            output_bytes=self.next_output_bytes,
        )
        self._next_failure = None
        self.next_output_bytes = None
        self.predictions[job.id] = job
        self.last_prediction_input = payload
        self.counts["predictions_created"] += 1
        model.run_count += 1
        self._queue_webhook(job, ("start",))
        await self._notify()
        if self.prediction_mode == "auto":
            self._spawn(self._run_prediction(job))
        return await self._answer_created(request, job)

    async def _list_predictions(self, request: web.Request) -> web.Response:
        """Newest first, ``list_page_size`` (100) a page, with an opaque ``cursor`` to the
        next and previous pages, as Replicate pages them."""
        newest = sorted(self.predictions.values(), key=lambda j: j.created_at, reverse=True)
        try:
            raw = request.query.get("cursor")
            start = int(base64.urlsafe_b64decode(raw).decode().removeprefix("o=")) if raw else 0
        except ValueError:
            return _problem(400, "Bad Request", "Invalid cursor")
        size = self.list_page_size

        def link(offset: int) -> str:
            cursor = base64.urlsafe_b64encode(f"o={offset}".encode()).decode()
            return f"{self.base_url}/v1/predictions?cursor={cursor}"

        results = [job.to_json(self.base_url) for job in newest[start : start + size]]
        return web.json_response(
            {
                "next": link(start + size) if start + size < len(newest) else None,
                "previous": link(max(0, start - size)) if start > 0 else None,
                "results": results,
            }
        )

    async def _get_prediction(self, request: web.Request) -> web.Response:
        return self._job_answer(self.predictions.get(request.match_info["id"]))

    async def _cancel_prediction(self, request: web.Request) -> web.Response:
        return await self._cancel_job(self.predictions.get(request.match_info["id"]))

    def _job_answer(self, job: Job | None) -> web.Response:
        if job is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        return web.json_response(job.to_json(self.base_url))

    async def _cancel_job(self, job: Job | None) -> web.Response:
        if job is not None and not job.finished:
            self.counts[f"{job.kind}s_canceled"] += 1
            await self._update(job, status="canceled", completed_at=_now())
        return self._job_answer(job)

    async def _create_file(self, request: web.Request) -> web.Response:
        raw = await request.read()
        boundary = request.content_type == "multipart/form-data" and _boundary(request)
        if not boundary:
            return _problem(400, "Bad Request", "Expected multipart/form-data")
        form, uploads = MultiPartParser().parse(io.BytesIO(raw), boundary, len(raw))
        upload = uploads.get("content")
        if upload is None:
            return _problem(422, "Invalid request", "The content part is required")
        try:
            data = upload.read()
        finally:
            upload.close()
        if len(data) > 100 * 1024 * 1024:
            return _problem(413, "Content Too Large", "Files must be less than 100MB in size")
        try:
            metadata = json.loads(form.get("metadata") or "{}")
        except ValueError:
            return _problem(422, "Invalid request", "metadata must be JSON")
        stored = StoredFile(
            id=_new_id(),
            name=form.get("filename") or upload.filename or "file",
            content_type=form.get("type") or upload.mimetype or "application/octet-stream",
            data=data,
            metadata=metadata if isinstance(metadata, dict) else {},
        )
        self.files[stored.id] = stored
        self.counts["files_created"] += 1
        await self._notify()
        return web.json_response(stored.to_json(self.base_url), status=201)

    async def _get_file(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["id"])
        if stored is None:
            return _problem(404, "Not found", "File not found")
        return web.json_response(stored.to_json(self.base_url))

    async def _create_training(self, request: web.Request) -> web.Response:
        trainer = self._model_or_404(request.match_info["owner"], request.match_info["name"])
        version = trainer.versions.get(request.match_info["version"])
        if version is None or version.kind != "trainer":
            return _problem(404, "Not found", "The requested resource could not be found.")
        body = await self._json_body(request)
        destination = str(body.get("destination", ""))
        owner, _, name = destination.partition("/")
        if not owner or not MODEL_NAME.fullmatch(name):
            return _problem(
                422,
                "Invalid destination",
                "The destination must be in the format owner/name, with a name of lowercase "
                "letters, numbers, dashes, underscores, or periods.",
            )
        if destination not in self.models or owner != self.username:
            return _problem(404, "Not found", "The specified training destination does not exist")
        payload = body.get("input")
        refused = _refuse_input(version.schema, payload)
        if refused is not None:
            return refused
        job = Job(
            kind="training",
            id=_new_id(),
            model=trainer.ref,
            version=version.id,
            input=payload,
            schema=version.schema,
            destination=destination,
            webhook=body.get("webhook"),
            webhook_events=frozenset(body.get("webhook_events_filter") or ALL_EVENTS),
            fail_with=self._zip_problem(str(payload.get("input_images", ""))),
        )
        self.trainings[job.id] = job
        self.counts["trainings_created"] += 1
        self._queue_webhook(job, ("start",))
        await self._notify()
        if self.training_mode == "auto":
            self._spawn(self._run_training(job))
        return web.json_response(job.to_json(self.base_url), status=201)

    def _zip_problem(self, url: str) -> str | None:
        """The trainer's own check: an uploaded file that is not a zip fails the run."""
        prefix = f"{self.base_url}/v1/files/"
        if url.startswith(prefix):
            stored = self.files.get(url[len(prefix) :].split("/", 1)[0])
            if stored is not None and not stored.data.startswith(b"PK\x03\x04"):
                return ZIP_ERROR
        return None

    async def _get_training(self, request: web.Request) -> web.Response:
        return self._job_answer(self.trainings.get(request.match_info["id"]))

    async def _cancel_training(self, request: web.Request) -> web.Response:
        return await self._cancel_job(self.trainings.get(request.match_info["id"]))

    async def _serve_output(self, request: web.Request) -> web.StreamResponse:
        self.output_requests.append((request.path, dict(request.headers)))
        stored = self._outputs.get(request.path)
        if stored is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = stored
        return web.Response(body=data, content_type=content_type)


# --------------------------------------------------------------------------- helpers


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _boundary(request: web.Request) -> bytes | None:
    match = re.search(r'boundary="?([^";]+)"?', request.headers.get("Content-Type", ""))
    return match.group(1).encode() if match else None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _problem(
    status: int, title: str, detail: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """An RFC 7807 error as Replicate sends them."""
    return web.json_response(
        {"title": title, "detail": detail, "status": status},
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )


class _ProblemError(Exception):
    """A problem answer raised from deep inside a handler."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


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
        sock = _bind()
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
