"""Running the predictions of one job: usually one; several when the job asks for more
images than one prediction of its model makes, or upscales several images. They run at
once and their images are put together in order, as if one prediction had made them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from services.generation.requests import Call
from services.replicate import (
    GenerationCanceled,
    GenerationResult,
    Progress,
    ReplicateService,
    ReplicateServiceError,
)

log = logging.getLogger(__name__)

OnProgress = Callable[[Progress], Awaitable[None]]


async def run_calls(
    replicate: ReplicateService,
    calls: Sequence[Call],
    on_progress: OnProgress,
    *,
    webhook: str | None,
) -> GenerationResult:
    """Run every call; the images of those that succeeded, in order. One canceled
    cancels the whole; if none succeeded, the first failure is raised."""
    if len(calls) == 1:
        call = calls[0]
        return await replicate.run(
            call.model, call.inputs, on_progress=on_progress, webhook=webhook
        )
    outcomes = await asyncio.gather(
        *(
            replicate.run(call.model, call.inputs, on_progress=on_progress, webhook=webhook)
            for call in calls
        ),
        return_exceptions=True,
    )
    results = [o for o in outcomes if isinstance(o, GenerationResult)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    for error in errors:
        if isinstance(error, GenerationCanceled) or not isinstance(error, ReplicateServiceError):
            raise error
    if not results:
        raise errors[0]
    for error in errors:
        log.warning("a prediction of %d failed; keeping the others' images: %s", len(calls), error)
    return merge(results)


async def resume_all(
    replicate: ReplicateService, prediction_ids: Sequence[str]
) -> GenerationResult:
    """Follow predictions created earlier (by a process that is gone) to their end."""
    outcomes = await asyncio.gather(
        *(replicate.resume(pid) for pid in prediction_ids), return_exceptions=True
    )
    results = [o for o in outcomes if isinstance(o, GenerationResult)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    for error in errors:
        if isinstance(error, GenerationCanceled) or not isinstance(error, ReplicateServiceError):
            raise error
    if not results:
        raise errors[0]
    return merge(results)


def merge(results: Sequence[GenerationResult]) -> GenerationResult:
    """One result from several, in order: the first's seed and prediction, every image,
    the predict time summed (what Replicate bills)."""
    first = results[0]
    if len(results) == 1:
        return first
    times = [r.predict_time for r in results if r.predict_time is not None]
    urls: tuple[str, ...] = ()
    if all(len(r.output_urls) == len(r.images) for r in results):
        urls = tuple(url for r in results for url in r.output_urls)
    created = [r.created_at for r in results if r.created_at is not None]
    started = [r.started_at for r in results if r.started_at is not None]
    completed = [r.completed_at for r in results if r.completed_at is not None]
    return GenerationResult(
        images=[image for r in results for image in r.images],
        seed=first.seed,
        prediction_id=first.prediction_id,
        model=first.model,
        created_at=min(created) if created else None,
        started_at=min(started) if started else None,
        completed_at=max(completed) if completed else None,
        queue_seconds=first.queue_seconds,
        total_seconds=max(
            (r.total_seconds for r in results if r.total_seconds is not None), default=None
        ),
        predict_time=sum(times) if times else None,
        output_urls=urls,
    )
