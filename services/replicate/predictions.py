"""Predictions: created, followed to their end, turned into a :class:`GenerationResult`.

Predictions are created and then polled explicitly: ``async_run`` with ``Prefer: wait``
returns an empty output for a prediction that is still ``processing``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from services.replicate.api import ReplicateApi
from services.replicate.downloads import OutputDownloader
from services.replicate.errors import (
    GenerationCanceled,
    ModelFailedError,
    NSFWError,
    ReplicateServiceError,
    trim,
)
from services.replicate.poller import PredictionPoller
from services.replicate.values import (
    TERMINAL_STATUSES,
    GenerationResult,
    ModelRef,
    PredictionData,
    Progress,
    parse_time,
    seconds_between,
)

log = logging.getLogger(__name__)

_SEED = re.compile(r"Using seed:\s*(-?\d+)")
_NSFW = re.compile(r"nsfw content", re.IGNORECASE)


def seed_of(inputs: Mapping[str, Any], logs: str | None) -> int | None:
    """The seed asked for, else the one the model says it used in its logs."""
    seed = inputs.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    matches = _SEED.findall(logs or "")
    return int(matches[-1]) if matches else None


def output_urls(output: Any, count: int) -> tuple[str, ...]:
    """The https URLs of a prediction's outputs, one per image, or none if any came
    another way (inline data): a later job may send them as its input image."""
    items = output if isinstance(output, list) else [output]
    urls = tuple(str(getattr(item, "url", item)) for item in items)
    if len(urls) != count or not all(url.startswith("https://") for url in urls):
        return ()
    return urls


class Predictions:
    """Creates predictions and follows them with the poller to their downloaded images."""

    def __init__(
        self, api: ReplicateApi, poller: PredictionPoller, downloads: OutputDownloader
    ) -> None:
        self._api = api
        self._poller = poller
        self._downloads = downloads

    async def create(
        self, ref: ModelRef, inputs: dict[str, Any], *, webhook: str | None
    ) -> PredictionData:
        """Create a prediction of ``ref`` (official model, or a version of a trained one),
        retried only after a 429. The body is the official client's, sent without it
        (every input is already JSON: text, numbers, links and data URLs)."""
        api = self._api
        body: dict[str, Any] = {"input": inputs}
        if webhook:
            body |= {"webhook": webhook, "webhook_events_filter": ["completed"]}
        if ref.version:
            version = ref.version
            prediction = await api.create(
                lambda: api.create_prediction("/v1/predictions", {**body, "version": version}),
                what=f"prediction for {ref.model}:{version[:8]}",
            )
        else:
            path = f"/v1/models/{quote(ref.owner, safe='')}/{quote(ref.name, safe='')}/predictions"
            prediction = await api.create(
                lambda: api.create_prediction(path, body),
                what=f"prediction for {ref.model}",
            )
        log.info("prediction %s created for %s (%s)", prediction.id, ref, prediction.status)
        return prediction

    async def find(self, *, prompt: str, seed: int | None, since: datetime) -> list[str]:
        """Ids of recent predictions (newest first) with this prompt and seed, created at
        or after ``since``."""
        page = await self._api.list_predictions()
        found: list[str] = []
        for prediction in page.results:
            created = parse_time(prediction.created_at)
            if created is not None and created < since:
                break
            inputs = prediction.input or {}
            if inputs.get("prompt") == prompt and (seed is None or inputs.get("seed") == seed):
                found.append(prediction.id)
        return found

    async def follow(
        self,
        prediction: Any,
        inputs: Mapping[str, Any],
        model: str,
        on_progress: Callable[[Progress], Awaitable[None]] | None,
        *,
        webhooked: bool = False,
    ) -> GenerationResult:
        """Wait for ``prediction`` to end, reporting each status, and download its images."""
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
            prediction = await self._api.get_prediction(prediction.id)

        metrics = prediction.metrics or {}
        predict_time = metrics.get("predict_time")
        if not isinstance(predict_time, int | float):
            predict_time = None
        failure: ReplicateServiceError | None = None
        if prediction.status == "canceled":
            failure = GenerationCanceled(f"prediction {prediction.id} was canceled")
        elif prediction.status == "failed":
            error = self._api.redact(prediction.error or "")
            if _NSFW.search(error):
                failure = NSFWError(f"prediction {prediction.id}: {trim(error)}")
            else:
                failure = ModelFailedError(error)
        if failure is not None:
            failure.predict_time = predict_time
            raise failure

        images = await self._downloads.download_all(prediction.id, prediction.output)
        created = parse_time(prediction.created_at)
        started_at = parse_time(prediction.started_at)
        completed = parse_time(prediction.completed_at)
        return GenerationResult(
            images=images,
            seed=seed_of(inputs, prediction.logs),
            prediction_id=prediction.id,
            model=model,
            created_at=created,
            started_at=started_at,
            completed_at=completed,
            queue_seconds=seconds_between(created, started_at),
            total_seconds=seconds_between(created, completed),
            predict_time=float(predict_time) if isinstance(predict_time, int | float) else None,
            output_urls=output_urls(prediction.output, len(images)),
        )
