"""Image generation jobs: creation, the run itself, and cancelation.

Who may generate now is decided in :mod:`services.generation_limits`; which job gets a
free slot, in :mod:`services.fair_queue`; which models may be used, in
:mod:`services.model_catalog`; what becomes of jobs a restart interrupted, in
:mod:`services.generation_recovery`.

Shared by the Discord front end (``cogs/generate.py``) and the HTTP API. Job state is
kept in the store; only the queue of this process (which job waits for a slot) lives
in memory, since ``MAX_CONCURRENT_GENERATIONS`` bounds this process's spending.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.errors import UserFacingError
from services.fair_queue import FairQueue
from services.generation_limits import GenerationLimits
from services.images import FittedImage, fit_image
from services.model_catalog import ModelCatalog, ResolvedModel
from services.replicate import (
    GenerationCanceled,
    GenerationResult,
    Progress,
    ReplicateService,
    ReplicateServiceError,
)
from services.settings import ASPECT_RATIOS, Settings
from services.store import Generation, NewGeneration, Store

log = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1
MAX_PROMPT = 1000
INTERRUPTED = "The bot restarted before this job finished. Please try again."


@dataclass
class JobState:
    """What a front end shows while a job waits or runs."""

    gen_id: str
    phase: str  # "queued", "generating", "done", "failed", "canceled"
    position: int = 0
    queue_size: int = 0
    started_monotonic: float | None = None
    prediction_id: str | None = None

    @property
    def elapsed(self) -> float:
        if self.started_monotonic is None:
            return 0.0
        return time.monotonic() - self.started_monotonic


Listener = Callable[[JobState], Awaitable[None]]


@dataclass(frozen=True)
class Reroll:
    """What to ask for to make a job's images again (with a new seed)."""

    prompt: str
    model: str
    aspect_ratio: str
    count: int


@dataclass
class Outcome:
    generation: Generation
    result: GenerationResult | None
    images: list[FittedImage] = field(default_factory=list)


class GenerationService:
    def __init__(self, settings: Settings, replicate: ReplicateService, store: Store) -> None:
        self.settings = settings
        self.replicate = replicate
        self.store = store
        self.queue = FairQueue(settings.max_concurrent_generations)
        self.limits = GenerationLimits(settings, store, self.queue)
        self.models = ModelCatalog(settings, store)
        self._states: dict[str, JobState] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    # -- limits -----------------------------------------------------------------

    async def check_limits(self, user_key: str) -> None:
        """Raise LimitReached (with when to retry) if this user may not generate now."""
        await self.limits.check(user_key)

    # -- jobs -------------------------------------------------------------------

    async def create(
        self,
        *,
        user_key: str,
        prompt: str,
        model: ResolvedModel,
        aspect_ratio: str = "1:1",
        count: int = 1,
        seed: int | None = None,
        user_id: int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        interaction_id: int | None = None,
        source: str = "discord",
    ) -> Generation:
        prompt = prompt.strip()
        if not prompt:
            raise UserFacingError("The prompt is empty.")
        if len(prompt) > MAX_PROMPT:
            raise UserFacingError(f"The prompt is too long ({len(prompt)} > {MAX_PROMPT}).")
        if aspect_ratio not in ASPECT_RATIOS:
            raise UserFacingError(f"Aspect ratio must be one of {', '.join(ASPECT_RATIOS)}.")
        if not 1 <= count <= 4:
            raise UserFacingError("Count must be between 1 and 4.")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise UserFacingError(f"Seed must be between 0 and {MAX_SEED}.")
        trigger_prepended = False
        if model.trigger_word and model.trigger_word.lower() not in prompt.lower():
            prompt = f"{model.trigger_word} {prompt}"[:MAX_PROMPT]
            trigger_prepended = True
        self.limits.check_capacity()
        self.limits.record_use(user_key)
        return await self.store.create_generation(
            NewGeneration(
                user_key=user_key,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                prompt=prompt,
                model=model.ref,
                params={
                    "aspect_ratio": aspect_ratio,
                    "count": count,
                    "seed": seed if seed is not None else random.randint(0, MAX_SEED),
                    "trigger_word": model.trigger_word,
                    "trigger_prepended": trigger_prepended,
                },
                interaction_id=interaction_id,
                source=source,
                owner=self.settings.instance_id,
            )
        )

    def is_running(self, gen_id: str) -> bool:
        """Whether this process is running (or queuing) the job."""
        return gen_id in self._states

    async def get(self, gen_id: str) -> Generation | None:
        return await self.store.get_generation(gen_id)

    async def record_result_message(self, gen_id: str, message_id: int) -> None:
        """Remember the message that shows the job's images."""
        await self.store.update_generation(gen_id, result_message_id=message_id)

    async def reroll_of(self, gen_id: str) -> Reroll | None:
        """The job's request as its requester made it, to run again; None if it is gone.

        A trigger word the bot added to the prompt is taken out again: the new job adds
        it anew if the model still needs it."""
        original = await self.store.get_generation(gen_id)
        if original is None:
            return None
        params = original.params
        prompt = original.prompt
        trigger = params.get("trigger_word")
        if params.get("trigger_prepended") and trigger:
            prompt = prompt.removeprefix(f"{trigger} ")
        return Reroll(
            prompt=prompt,
            model=original.model,
            aspect_ratio=params.get("aspect_ratio", "1:1"),
            count=params.get("count", 1),
        )

    async def run(
        self, generation: Generation, listener: Listener, *, size_limit: int, total_limit: int
    ) -> Outcome:
        """Wait for a slot, run the prediction, download and fit the images.

        Always records the final status; domain errors are re-raised after that."""
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
            await self.queue.acquire(gen_id, on_position)
        except asyncio.CancelledError:
            if self.limits.closing:
                await self._finish(gen_id, state, "failed", error=INTERRUPTED)
            else:
                await self._finish(gen_id, state, "canceled", error="Canceled while queued.")
            self._forget(gen_id)
            return Outcome(await self._reload(gen_id), None)
        try:
            return await self._run_slot(generation, state, listener, size_limit, total_limit)
        finally:
            self.queue.release()
            self._forget(gen_id)

    async def _run_slot(
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
        # Stored before the create goes out: after a crash, a job marked running without a
        # prediction id is one whose create may have reached Replicate.
        await self.store.update_generation(gen_id, status="running", started_at=_now())
        await _safe(listener, state)

        async def on_progress(progress: Progress) -> None:
            if state.prediction_id is None and progress.prediction_id:
                state.prediction_id = progress.prediction_id
                await self.store.update_generation(gen_id, prediction_id=progress.prediction_id)
            await _safe(listener, state)

        params = generation.params
        options: dict[str, Any] = {
            "aspect_ratio": params.get("aspect_ratio", "1:1"),
            "num_outputs": params.get("count", 1),
            "seed": params.get("seed"),
            "output_format": "png",
        }
        try:
            result = await self.replicate.generate(
                generation.model,
                generation.prompt,
                options,
                on_progress=on_progress,
                webhook=self.settings.webhook_url,
            )
        except GenerationCanceled:
            await self._finish(gen_id, state, "canceled", error="Canceled.")
            return Outcome(await self._reload(gen_id), None)
        except asyncio.CancelledError:
            await self._cancel_remote(state)
            if self.limits.closing:
                await self._finish(gen_id, state, "failed", error=INTERRUPTED)
            else:
                await self._finish(gen_id, state, "canceled", error="Canceled.")
            raise
        except ReplicateServiceError as exc:
            await self._finish(gen_id, state, "failed", error=exc.user_message)
            raise
        except Exception as exc:
            await self._finish(
                gen_id, state, "failed", error=f"Internal error ({type(exc).__name__})"
            )
            raise
        state.phase = "done"
        return await self.complete(
            generation, result, size_limit=size_limit, total_limit=total_limit
        )

    async def complete(
        self,
        generation: Generation,
        result: GenerationResult,
        *,
        size_limit: int,
        total_limit: int,
    ) -> Outcome:
        """Fit the images into ``size_limit`` each and ``total_limit`` in all, and record
        the job as succeeded."""
        per_image = max(8 * 1024, min(size_limit, total_limit // max(1, len(result.images))))
        # An image that fits is only probed (its header): not worth a trip to a thread.
        images = [
            fit_image(image.data, image.filename, per_image)
            if len(image.data) <= per_image
            else await asyncio.to_thread(fit_image, image.data, image.filename, per_image)
            for image in result.images
        ]
        seed = result.seed if result.seed is not None else generation.params.get("seed")
        stored = await self.store.set_generation(
            generation.id,
            status="succeeded",
            seed=seed,
            prediction_id=result.prediction_id,
            predict_time=result.predict_time,
            finished_at=_now(),
        )
        assert stored is not None
        return Outcome(stored, result, images)

    async def cancel(self, gen_id: str) -> bool:
        """Cancel a queued or running job. True if something was canceled."""
        state = self._states.get(gen_id)
        if state is not None and state.phase == "queued" and self.queue.leave(gen_id):
            return True
        if state is not None and state.phase == "generating":
            if state.prediction_id:
                await self._cancel_remote(state)
                return True
            task = self._tasks.get(gen_id)
            if task is not None:
                task.cancel()
                return True
        generation = await self.store.get_generation(gen_id)
        if generation is None or generation.status not in ("queued", "running"):
            return False
        if generation.prediction_id:
            await self.replicate.cancel_prediction(generation.prediction_id)
        await self.store.update_generation(
            gen_id, status="canceled", error="Canceled.", finished_at=_now()
        )
        return True

    async def shutdown(self, grace: float) -> None:
        """Stop taking jobs; let running ones finish for up to ``grace`` seconds.

        Jobs still waiting, and running ones past the grace period, are recorded as
        failed (and canceled on Replicate), so nothing is left pending in the store."""
        self.limits.closing = True
        for gen_id, state in list(self._states.items()):
            if state.phase == "queued":
                self.queue.leave(gen_id)
        running = [t for t in self._tasks.values() if not t.done()]
        if not running:
            return
        _done, pending = await asyncio.wait(running, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def _cancel_remote(self, state: JobState) -> None:
        if state.prediction_id:
            try:
                await self.replicate.cancel_prediction(state.prediction_id)
            except ReplicateServiceError as exc:
                log.warning("could not cancel prediction %s: %s", state.prediction_id, exc)

    async def _finish(self, gen_id: str, state: JobState, status: str, *, error: str) -> None:
        state.phase = status
        await self.store.update_generation(gen_id, status=status, error=error, finished_at=_now())

    async def _reload(self, gen_id: str) -> Generation:
        generation = await self.store.get_generation(gen_id)
        assert generation is not None
        return generation

    def _forget(self, gen_id: str) -> None:
        self._states.pop(gen_id, None)
        self._tasks.pop(gen_id, None)


async def _safe(listener: Listener, state: JobState) -> None:
    try:
        await listener(state)
    except Exception:
        log.exception("progress listener failed for %s", state.gen_id)


def _now() -> datetime:
    return datetime.now(UTC)
