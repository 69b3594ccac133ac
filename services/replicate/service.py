"""Everything this project does with Replicate goes through :class:`ReplicateService`.

One service per process: it owns one ``replicate.Client`` that every coroutine shares,
and downloads outputs without credentials. Requests and downloads travel over one
aiohttp session (the process's, when given). It knows nothing about Discord: callers get
plain dataclasses back and :class:`ReplicateServiceError` subclasses whose
``user_message`` can be shown to an end user as is.

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

The work is done by the modules beside this one: :mod:`~services.replicate.api` (the
client and its errors), :mod:`~services.replicate.predictions` and
:mod:`~services.replicate.poller`, :mod:`~services.replicate.downloads`,
:mod:`~services.replicate.trainings` and :mod:`~services.replicate.models`.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from services.input_images import DATA_URI_MAX_BYTES, to_data_uri
from services.logs import add_secret
from services.model_inputs import ModelInputs
from services.replicate import models, trainings
from services.replicate.api import ReplicateApi
from services.replicate.downloads import OutputDownloader
from services.replicate.errors import NotFoundError, ReplicateServiceError, ReplicateUnavailable
from services.replicate.poller import POLL_OUTAGE_LIMIT, PollTiming, PredictionPoller
from services.replicate.predictions import Predictions
from services.replicate.schemas import ModelSchemas
from services.replicate.values import (
    DEFAULT_MODEL,
    Account,
    GenerationResult,
    Progress,
    TrainingState,
    UploadedFile,
    parse_model_ref,
)


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
        schema_ttl: float = 3600.0,
        schema_cache_size: int = 256,
    ) -> None:
        if not api_token:
            raise ValueError("a Replicate API token is required")
        self.base_url = (base_url or "https://api.replicate.com").rstrip("/")
        self.poll_interval = poll_interval
        self.list_poll_interval = min(list_poll_interval, poll_interval)
        self.webhook_poll_interval = webhook_poll_interval
        self.max_output_bytes = max_output_bytes
        self.request_timeout = request_timeout
        self.max_create_retries = max_create_retries
        self.outage_limit = outage_limit
        self._http = http
        self._own_http: aiohttp.ClientSession | None = None
        self._api = ReplicateApi(
            api_token,
            base_url=self.base_url,
            request_timeout=request_timeout,
            poll_interval=poll_interval,
            max_create_retries=max_create_retries,
            session=self._aiohttp,
        )
        self._poller = PredictionPoller(
            self._api,
            PollTiming(
                poll_interval=poll_interval,
                list_poll_interval=self.list_poll_interval,
                webhook_poll_interval=webhook_poll_interval,
                outage_limit=outage_limit,
            ),
        )
        downloads = OutputDownloader(
            self._aiohttp, max_bytes=max_output_bytes, request_timeout=request_timeout
        )
        self._predictions = Predictions(self._api, self._poller, downloads)
        self.schemas = ModelSchemas(
            self.model_inputs, ttl=schema_ttl, max_entries=schema_cache_size
        )
        self._webhook_secret: str | None = None
        self._secret_lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"ReplicateService(base_url={self.base_url!r})"

    def _aiohttp(self) -> aiohttp.ClientSession:
        """The process's shared session, or one of this service's own without it (or
        once it is closed, for the last calls of a shutdown)."""
        http = self._http
        if http is None or http.closed:
            if self._own_http is None or self._own_http.closed:
                self._own_http = aiohttp.ClientSession()
            http = self._own_http
        return http

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._poller.aclose()
        if self._own_http is not None:
            await self._own_http.close()
        await self._api.aclose()

    async def __aenter__(self) -> ReplicateService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ account

    async def account(self) -> Account:
        api = self._api
        acc = await api.call(api.client.accounts.async_current())
        return Account(username=acc.username, name=acc.name or acc.username, type=acc.type)

    async def ping(self, timeout: float) -> float:  # noqa: ASYNC109 - the API is fixed
        """Round trip of ``GET /v1/account`` in milliseconds.

        Any failure (timeout, refused token, 5xx) raises :class:`ReplicateUnavailable`."""
        api = self._api
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await api.call(api.client.accounts.async_current())
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
                    api = self._api
                    secret = await api.call(api.client.webhooks.default.async_secret())
                    add_secret(secret.key)
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
        inputs = dict(options or {})
        inputs["prompt"] = prompt
        return await self.run(
            model or DEFAULT_MODEL, inputs, on_progress=on_progress, webhook=webhook
        )

    async def run(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        on_progress: Callable[[Progress], Awaitable[None]] | None = None,
        webhook: str | None = None,
    ) -> GenerationResult:
        """Like :meth:`generate`, with the model's inputs exactly as given (None values
        dropped): for models without a prompt, such as an upscaler. Run a community
        model by version (``ModelInputs.run_ref`` says which reference to run)."""
        ref = parse_model_ref(model)
        sent = {k: v for k, v in inputs.items() if v is not None}
        prediction = await self._predictions.create(ref, sent, webhook=webhook)
        return await self._predictions.follow(
            prediction, sent, str(ref), on_progress, webhooked=webhook is not None
        )

    def offer_prediction(self, payload: Mapping[str, Any]) -> bool:
        """Take a verified webhook delivery for a prediction this process follows; False
        if it follows no prediction with that id (a training's delivery, for instance)."""
        return self._poller.offer(payload)

    def poke_prediction(self, prediction_id: str) -> bool:
        """Poll a followed prediction now, e.g. when another process received its
        webhook; False if this process does not follow it."""
        return self._poller.poke(prediction_id)

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
        prediction = await self._api.get_prediction(prediction_id)
        inputs = dict(prediction.input or {})
        return await self._predictions.follow(
            prediction, inputs, str(prediction.model), on_progress
        )

    async def find_predictions(
        self, *, prompt: str, seed: int | None, since: datetime
    ) -> list[str]:
        """Ids of recent predictions (newest first) with this prompt and seed, created at
        or after ``since``: a create whose answer was lost (the process died waiting)."""
        return await self._predictions.find(prompt=prompt, seed=seed, since=since)

    async def cancel_prediction(self, prediction_id: str) -> None:
        api = self._api
        await api.call(api.client.predictions.async_cancel(prediction_id), not_found=NotFoundError)

    # ------------------------------------------------------------------ models and files

    async def model_inputs(self, model: str) -> ModelInputs:
        """What ``model`` takes, read now (``schemas.inputs(model)`` is the cached way)."""
        return await models.model_inputs(self._api, model)

    async def model_exists(self, owner: str, name: str) -> bool:
        return await models.model_exists(self._api, owner, name)

    async def ensure_model(self, owner: str, name: str) -> bool:
        """Make sure ``owner/name`` exists; create it private if not. True if created."""
        return await models.ensure_model(self._api, owner, name)

    async def file_input(
        self,
        data: bytes,
        *,
        content_type: str,
        filename: str = "input",
        inline_limit: int = DATA_URI_MAX_BYTES,
    ) -> str:
        """A value for a model's file input (an image to upscale or vary): a data URI
        up to ``inline_limit`` bytes, else the URL of a Files API upload."""
        if len(data) <= inline_limit:
            return to_data_uri(data, content_type)
        uploaded = await self.upload(io.BytesIO(data), filename=filename, content_type=content_type)
        return uploaded.url

    async def upload(
        self,
        source: str | Path | BinaryIO,
        *,
        filename: str = "data.zip",
        content_type: str = "application/zip",
    ) -> UploadedFile:
        """Upload a file (a path, or a binary file object) for use as a model input."""
        return await models.upload(self._api, source, filename=filename, content_type=content_type)

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
        return await trainings.start(
            self._api,
            trainer,
            destination,
            training_input,
            webhook=webhook,
            webhook_events=webhook_events,
        )

    async def get_training(self, training_id: str) -> TrainingState:
        return await trainings.get(self._api, training_id)

    async def cancel_training(self, training_id: str) -> TrainingState:
        return await trainings.cancel(self._api, training_id)

    def training_state_from_payload(self, payload: Mapping[str, Any]) -> TrainingState:
        """A webhook delivery's body is the object ``GET /v1/trainings/{id}`` returns."""
        return trainings.state_from_payload(self._api, payload)
