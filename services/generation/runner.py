"""Running a generation job to its end: its turn in the queue, its predictions, its
images fitted and recorded, and every way it can end otherwise (canceled, failed, or
handed back when this process stops).

Every end is recorded in the store with a condition on the job's status, so a job ends
once, and only the process that ended it posts its images.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import Any

from services.costs import PriceTable
from services.generation.admission import Admission
from services.generation.jobs import CANCELED, INTERRUPTED, JobState, JobStopped, Listener, Outcome
from services.generation.predict import run_calls
from services.generation.queue import StoreQueue
from services.generation.requests import calls
from services.generation.sources import ImageSources, InputImageGone
from services.images import fit_image
from services.input_images import InputImageError
from services.ownership import LeaseKeeper
from services.replicate import (
    TERMINAL_STATUSES,
    GenerationCanceled,
    GenerationResult,
    Progress,
    ReplicateService,
    ReplicateServiceError,
)
from services.settings import Settings
from services.store import Generation, Store

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        replicate: ReplicateService,
        store: Store,
        keeper: LeaseKeeper,
        prices: PriceTable,
        admission: Admission,
        queue: StoreQueue,
        sources: ImageSources,
    ) -> None:
        self.settings = settings
        self.replicate = replicate
        self.store = store
        self.keeper = keeper
        self.prices = prices
        self.admission = admission
        self.queue = queue
        self.sources = sources
        self._states: dict[str, JobState] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    @property
    def closing(self) -> bool:
        return self.admission.closing

    def state(self, gen_id: str) -> JobState | None:
        """The job's state if it runs (or waits) here."""
        return self._states.get(gen_id)

    async def run(
        self, generation: Generation, listener: Listener, *, size_limit: int, total_limit: int
    ) -> Outcome:
        """Wait for the job's turn, run the prediction, download and fit the images.

        Always records how the job ended; domain errors are re-raised after that."""
        gen_id = generation.id
        state = JobState(gen_id=gen_id, phase="queued")
        self._states[gen_id] = state
        task = asyncio.current_task()
        if task is not None:
            self._tasks[gen_id] = task

        async def on_position(position: int, total: int) -> None:
            if state.phase == "queued":
                state.position, state.queue_size = position, total
                await _safe(listener, state)

        try:
            try:
                started = await self.queue.wait_turn(generation, on_position)
            except JobStopped as stopped:
                state.phase = stopped.generation.status if stopped.generation else "canceled"
                return Outcome(stopped.generation or generation, None)
            except asyncio.CancelledError:
                return await self._stopped_waiting(generation, state)
            return await self._run_started(started, state, listener, size_limit, total_limit)
        finally:
            self._states.pop(gen_id, None)
            self._tasks.pop(gen_id, None)
            self.sources.drop(gen_id)

    async def drain(self, grace: float) -> None:
        """Take the jobs waiting here out of the queue; let running ones finish for up to
        ``grace`` seconds, then cancel them (they are handed back or failed)."""
        for gen_id, state in list(self._states.items()):
            if state.phase == "queued":
                self.queue.leave(gen_id)
        running = [t for t in self._tasks.values() if not t.done()]
        if running:
            _done, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    async def _stopped_waiting(self, generation: Generation, state: JobState) -> Outcome:
        """The wait was cut short: by this process stopping (the job is handed back, or,
        for the HTTP API whose caller goes away with the process, failed), or because its
        caller went away (the job is canceled)."""
        task = asyncio.current_task()
        cancelled = task is not None and task.cancelling() > 0
        now = datetime.now(UTC)
        if self.closing and generation.source == "discord":
            state.phase = "handed back"
            await self.store.release_leases(self.keeper.owner, now, [generation.id])
            if cancelled and task is not None:
                task.uncancel()
            return Outcome(generation, None, handed_back=True)
        if self.closing:
            await self._end(generation.id, "failed", INTERRUPTED, from_status=("queued",))
        else:
            await self.store.cancel_generation(generation.id, now, CANCELED)
        if cancelled:
            raise asyncio.CancelledError
        return Outcome(await self._reload(generation.id), None)

    async def _run_started(
        self,
        generation: Generation,
        state: JobState,
        listener: Listener,
        size_limit: int,
        total_limit: int,
    ) -> Outcome:
        gen_id = generation.id
        state.phase = "generating"
        state.started_monotonic = time.monotonic()
        await _safe(listener, state)

        try:
            result = await self._predict(generation, state, listener)
        except GenerationCanceled as exc:
            return await self._ended(
                gen_id, state, "canceled", CANCELED, **self._spent(generation.model, exc)
            )
        except asyncio.CancelledError:
            return await self._stopped_running(generation, state)
        except (InputImageGone, InputImageError) as exc:
            return await self._ended(gen_id, state, "failed", exc.user_message)
        except ReplicateServiceError as exc:
            await self._ended(
                gen_id, state, "failed", exc.user_message, **self._spent(generation.model, exc)
            )
            raise
        except Exception as exc:
            await self._ended(gen_id, state, "failed", f"Internal error ({type(exc).__name__})")
            raise
        state.phase = "done"
        if len(state.prediction_ids) > 1:
            params = {**generation.params, "predictions": list(state.prediction_ids)}
            generation = dataclasses.replace(generation, params=params)
        return await self.complete(
            generation, result, size_limit=size_limit, total_limit=total_limit
        )

    async def _predict(
        self, generation: Generation, state: JobState, listener: Listener
    ) -> GenerationResult:
        """Read the job's input images, then run its predictions."""
        gen_id = generation.id
        images = await self.sources.values(generation)
        planned = calls(generation.prompt, generation.model, generation.params, images)
        ended: set[str] = set()

        async def on_progress(progress: Progress) -> None:
            known = progress.prediction_id
            if progress.status in TERMINAL_STATUSES:
                ended.add(known)
                state.finishing = len(ended) >= len(planned)
            if known and known not in state.prediction_ids:
                state.prediction_ids.append(known)
                if state.prediction_id is None:
                    state.prediction_id = known
                    await self._prediction_known(gen_id, known)
                else:
                    await self._another_prediction_known(generation, state, known, len(planned))
            await _safe(listener, state)

        return await run_calls(
            self.replicate, planned, on_progress, webhook=self.settings.webhook_url
        )

    async def _another_prediction_known(
        self, generation: Generation, state: JobState, prediction_id: str, total: int
    ) -> None:
        """A job of several predictions: once all are known, they are stored for whoever
        takes the job over; one created after a Cancel is stopped."""
        job = await self.store.get_generation(generation.id)
        if job is None or job.cancel_requested_at is not None or job.status != "running":
            await self.cancel_remote(prediction_id)
        elif len(state.prediction_ids) == total:
            params = {**job.params, "predictions": list(state.prediction_ids)}
            await self.store.update_generation(generation.id, params=params)

    async def _stopped_running(self, generation: Generation, state: JobState) -> Outcome:
        """Cancelled while the prediction runs: at shutdown a Discord job is handed back
        (its prediction goes on and is followed by whoever takes the job over); else the
        prediction is canceled and the job recorded as such."""
        task = asyncio.current_task()
        if self.closing and generation.source == "discord":
            state.phase = "handed back"
            await self.store.release_leases(self.keeper.owner, datetime.now(UTC), [generation.id])
            if task is not None:
                task.uncancel()
            return Outcome(generation, None, handed_back=True)
        for prediction_id in state.prediction_ids or [state.prediction_id]:
            await self.cancel_remote(prediction_id)
        error = INTERRUPTED if self.closing else CANCELED
        await self._ended(generation.id, state, "failed" if self.closing else "canceled", error)
        raise asyncio.CancelledError

    async def _prediction_known(self, gen_id: str, prediction_id: str) -> None:
        stored = await self.store.set_prediction(gen_id, prediction_id, self.keeper.owner)
        if stored is None or stored.cancel_requested:
            await self.cancel_remote(prediction_id)

    async def complete(
        self,
        generation: Generation,
        result: GenerationResult,
        *,
        size_limit: int,
        total_limit: int,
    ) -> Outcome:
        """Fit the images into ``size_limit`` each and ``total_limit`` in all, and record
        the job as succeeded. No images if the job ended otherwise meanwhile (canceled, or
        finished by a process that took it over): whoever ended it posts."""
        per_image = max(8 * 1024, min(size_limit, total_limit // max(1, len(result.images))))
        # An image that fits is only probed (its header): not worth a trip to a thread.
        images = [
            fit_image(image.data, image.filename, per_image)
            if len(image.data) <= per_image
            else await asyncio.to_thread(fit_image, image.data, image.filename, per_image)
            for image in result.images
        ]
        seed = result.seed if result.seed is not None else generation.params.get("seed")
        extra: dict[str, Any] = {}
        if result.output_urls:
            # For the job's U and V buttons, while Replicate keeps the outputs.
            extra["params"] = {**generation.params, "outputs": list(result.output_urls)}
        stored = await self.store.finish_generation(
            generation.id,
            "succeeded",
            finished_at=datetime.now(UTC),
            owner=self.keeper.owner,
            seed=seed,
            prediction_id=result.prediction_id,
            predict_time=result.predict_time,
            **extra,
            image_count=len(result.images),
            cost_usd=self.prices.generation_cost(
                generation.model, len(result.images), result.predict_time
            ),
        )
        if stored is None:
            log.info("generation %s ended elsewhere; its images are not posted here", generation.id)
            return Outcome(await self._reload(generation.id), None)
        return Outcome(stored, result, images)

    async def end(self, gen_id: str, status: str, error: str) -> Outcome:
        """Record that a job this process owns ended without images."""
        await self._end(gen_id, status, error, from_status=("queued", "running"))
        return Outcome(await self._reload(gen_id), None)

    async def _ended(
        self, gen_id: str, state: JobState, status: str, error: str, **values: Any
    ) -> Outcome:
        state.phase = status
        await self._end(gen_id, status, error, **values)
        return Outcome(await self._reload(gen_id), None)

    async def _end(
        self,
        gen_id: str,
        status: str,
        error: str,
        *,
        from_status: tuple[str, ...] = ("running",),
        **values: Any,
    ) -> None:
        await self.store.finish_generation(
            gen_id,
            status,
            finished_at=datetime.now(UTC),
            owner=self.keeper.owner,
            from_status=from_status,
            error=error,
            **values,
        )

    def _spent(self, model: str, exc: ReplicateServiceError) -> dict[str, Any]:
        """What a prediction that ran and then failed (or was canceled) cost: Replicate
        bills its hardware time; a per-image model made no image to bill."""
        seconds = exc.predict_time
        if seconds is None:
            return {}
        return {"predict_time": seconds, "cost_usd": self.prices.generation_cost(model, 0, seconds)}

    async def stop_predictions(self, job: Generation) -> None:
        """Stop every prediction of a job known here or in the store."""
        for prediction_id in _predictions_of(job, self._states.get(job.id)):
            await self.cancel_remote(prediction_id)

    async def cancel_remote(self, prediction_id: str | None) -> None:
        """Stop a prediction on Replicate (no more billing); a failure is only logged."""
        if prediction_id:
            try:
                await self.replicate.cancel_prediction(prediction_id)
            except ReplicateServiceError as exc:
                log.warning("could not cancel prediction %s: %s", prediction_id, exc)

    async def _reload(self, gen_id: str) -> Generation:
        generation = await self.store.get_generation(gen_id)
        assert generation is not None
        return generation


def _predictions_of(job: Generation, state: JobState | None) -> list[str]:
    """Every prediction of a job known here or in the store, first one first."""
    found = [job.prediction_id or "", *(job.params.get("predictions") or [])]
    if state is not None:
        found += [state.prediction_id or "", *state.prediction_ids]
    return list(dict.fromkeys(p for p in found if isinstance(p, str) and p))


async def _safe(listener: Listener, state: JobState) -> None:
    try:
        await listener(state)
    except Exception:
        log.exception("progress listener failed for %s", state.gen_id)
