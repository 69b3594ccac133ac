"""What the emulator knows and records, the knobs tests turn, and waiting on changes."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import trustme
from aiohttp import web

from tests.emulators.replicate.common import (
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    TRAINER_VERSION_ID,
    UPSCALER_VERSION_ID,
)
from tests.emulators.replicate.model import (
    Job,
    Model,
    ReceivedImage,
    Script,
    StoredFile,
    Version,
    WebhookDelivery,
)
from tests.emulators.replicate.schemas import (
    DEV_SCHEMA,
    LORA_SCHEMA,
    SCHNELL_SCHEMA,
    TRAINER_SCHEMA,
    UPSCALER_SCHEMA,
    fresh,
)
from tests.emulators.spec import SpecChecker


class EmulatorState:
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
        self.webhook_max_attempts = 4
        self.webhook_retry_delay = 0.05
        # "refuse": an input the version does not declare is a 422 (the default, so a
        # test sees it); "ignore": dropped, as Replicate does.
        self.unknown_inputs = "refuse"
        self.input_fetch_timeout = 5.0
        # The metrics.predict_time every job that ends reports (its started_at is moved
        # to fit); None: the time it really ran.
        self.predict_time: float | None = None

        self.models: dict[str, Model] = {}
        self.predictions: dict[str, Job] = {}
        self.trainings: dict[str, Job] = {}
        self.files: dict[str, StoredFile] = {}
        self.counts: Counter[str] = Counter()
        #: The most predictions that were running (created, not finished) at one time.
        self.peak_running_predictions = 0
        self._running_predictions = 0
        self.requests: list[tuple[str, str, Any]] = []
        self.output_requests: list[tuple[str, dict[str, str]]] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.received_images: list[ReceivedImage] = []
        self.last_prediction_input: dict[str, Any] | None = None
        self.internal_errors: list[str] = []  # handler crashes; the fixture fails on any

        self._query_strings: list[tuple[str, str, str]] = []
        self._outputs: dict[str, tuple[bytes, str]] = {}
        self._scripts: list[Script] = []
        self._next_failure: str | None = None
        self._cond = asyncio.Condition()
        self._release = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # One queue per job: a job's deliveries arrive in order, different jobs' at once.
        self._webhook_queues: dict[str, asyncio.Queue[tuple[tuple[str, ...], bytes]]] = {}
        self._delivering = 0  # webhook deliveries being attempted
        self._http: aiohttp.ClientSession | None = None
        self._runners: list[web.AppRunner] = []
        self.base_url = ""
        self.files_base_url = ""
        self._seed_models()

    def _seed_models(self) -> None:
        schnell = Model("black-forest-labs", "flux-schnell", official=True)
        schnell.versions["hidden"] = Version(secrets.token_hex(32), fresh(SCHNELL_SCHEMA))
        dev = Model("black-forest-labs", "flux-dev", official=True)
        dev.versions["hidden"] = Version(secrets.token_hex(32), fresh(DEV_SCHEMA))
        upscaler = Model(
            "nightmareai",
            "real-esrgan",
            description="Real-ESRGAN with optional face correction and adjustable upscale",
            hardware="gpu-t4",
        )
        upscaler.versions[UPSCALER_VERSION_ID] = Version(
            UPSCALER_VERSION_ID, fresh(UPSCALER_SCHEMA), kind="upscaler"
        )
        trainer = Model("ostris", "flux-dev-lora-trainer", hardware="gpu-h100")
        trainer.versions[TRAINER_VERSION_ID] = Version(
            TRAINER_VERSION_ID, fresh(TRAINER_SCHEMA), kind="trainer"
        )
        for model in (schnell, dev, upscaler, trainer):
            self.models[model.ref] = model

    def add_version(
        self, model: Model, *, schema: dict[str, Any] | None = None, kind: str = "image"
    ) -> Version:
        """A new latest version of ``model`` (the LoRA schema unless ``schema``)."""
        version = Version(secrets.token_hex(32), fresh(schema or LORA_SCHEMA), kind=kind)
        model.versions["hidden" if model.official else version.id] = version
        return version

    # ------------------------------------------------------------------ waiting

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true; re-checked on every state change."""
        async with self._cond:
            return await asyncio.wait_for(self._cond.wait_for(predicate), timeout)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ reading

    def webhooks_pending(self) -> int:
        """Deliveries queued or being attempted (retries included)."""
        return sum(queue.qsize() for queue in self._webhook_queues.values()) + self._delivering

    def query_strings(self, method: str, path: str) -> list[str]:
        """The query strings of the requests made to exactly ``path``, in order."""
        return [q for m, p, q in self._query_strings if m == method and p == path]

    def request_count(self, method: str, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        return sum(1 for m, p, _ in self.requests if m == method and pattern.fullmatch(p))

    @property
    def running_predictions(self) -> int:
        """Predictions created and not finished: what Replicate is billing for now (counted
        as they start and end: a burst of creates must not cost the emulator O(N) each)."""
        return self._running_predictions

    @property
    def last_prediction(self) -> Job | None:
        return list(self.predictions.values())[-1] if self.predictions else None

    @property
    def last_training(self) -> Job | None:
        return list(self.trainings.values())[-1] if self.trainings else None

    def received_image(self, prediction_id: str | None = None, name: str | None = None) -> bytes:
        """The bytes of the file input ``name`` (the only or first one when None) that
        prediction ``prediction_id`` (the last one when None) received."""
        job = self.predictions[prediction_id] if prediction_id else self.last_prediction
        if job is None or not job.images:
            raise LookupError("no prediction received a file input")
        image = job.images[name] if name else next(iter(job.images.values()))
        return image.data
