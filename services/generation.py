"""Image generation jobs: limits, a fair queue, the run itself, and cancelation.

Shared by the Discord front end (``cogs/generate.py``) and the HTTP API. Job state is
kept in the store; only the queue of this process (which job waits for a slot) lives
in memory, since ``MAX_CONCURRENT_GENERATIONS`` bounds this process's spending.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.errors import LimitReached, UserFacingError
from services.images import FittedImage, fit_image
from services.replicate_service import (
    GenerationCanceled,
    GenerationResult,
    Progress,
    ReplicateService,
    ReplicateServiceError,
    parse_model_ref,
)
from services.settings import ASPECT_RATIOS, Settings
from services.store import Generation, NewGeneration, Store
from services.tasks import spawn

log = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1
MAX_PROMPT = 1000
INTERRUPTED = "The bot restarted before this job finished. Please try again."


@dataclass(frozen=True)
class ResolvedModel:
    ref: str
    trigger_word: str | None = None

    @property
    def trained(self) -> bool:
        return self.trigger_word is not None


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


class FairQueue:
    """A FIFO of waiting jobs in front of a fixed number of slots.

    Positions are observable, a waiter can leave (cancel) at any time, and a freed slot
    always goes to the job that has waited longest."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.running = 0
        self._waiters: collections.OrderedDict[str, asyncio.Future[None]] = (
            collections.OrderedDict()
        )
        self._watchers: dict[str, Callable[[int, int], Awaitable[None]]] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, key: str, on_position: Callable[[int, int], Awaitable[None]]) -> None:
        if self.running < self.slots and not self._waiters:
            self.running += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        self._watchers[key] = on_position
        self._announce()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release_slot()
            raise
        finally:
            self._waiters.pop(key, None)
            self._watchers.pop(key, None)
            self._announce()

    def leave(self, key: str) -> bool:
        """Take a waiting job out of the queue; False if it is not waiting."""
        future = self._waiters.pop(key, None)
        self._watchers.pop(key, None)
        if future is None:
            return False
        if not future.done():
            future.cancel()
        self._announce()
        return True

    def release(self) -> None:
        self._release_slot()

    def _release_slot(self) -> None:
        self.running -= 1
        while self._waiters and self.running < self.slots:
            key, future = self._waiters.popitem(last=False)
            self._watchers.pop(key, None)
            if not future.done():
                self.running += 1
                future.set_result(None)
        self._announce()

    def _announce(self) -> None:
        total = self.waiting
        for index, (key, watcher) in enumerate(list(self._watchers.items())):
            spawn(watcher(index + 1, total), name=f"queue-position-{key}")


class GenerationService:
    def __init__(self, settings: Settings, replicate: ReplicateService, store: Store) -> None:
        self.settings = settings
        self.replicate = replicate
        self.store = store
        self.queue = FairQueue(settings.max_concurrent_generations)
        self._states: dict[str, JobState] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._last_use: dict[str, float] = {}
        self._closing = False
        self._used_today: tuple[datetime, dict[str, int]] | None = None
        self._claiming = asyncio.Lock()
        self._counting: tuple[datetime, asyncio.Future[dict[str, int]]] | None = None

    # -- models -----------------------------------------------------------------

    async def model_choices(self, guild_id: int | None, current: str = "") -> list[tuple[str, str]]:
        """(label, value) pairs: configured models, then the guild's trained models."""
        needle = current.strip().lower()
        choices = [(m, m) for m in self.settings.generate_models if needle in m.lower()]
        for model in await self.store.models_for_guild(guild_id, limit=25):
            value = f"{model.owner}/{model.name}"
            if needle in value.lower() and all(value != v for _, v in choices):
                label = f"{value} (trained, trigger word {model.trigger_word})"
                choices.append((label[:100], value))
        return choices[:25]

    async def resolve_model(self, model: str | None, guild_id: int | None) -> ResolvedModel:
        configured = self.settings.generate_models
        if not model:
            return ResolvedModel(configured[0])
        model = model.strip()
        if model in configured:
            return ResolvedModel(model)
        try:
            ref = parse_model_ref(model)
        except ReplicateServiceError:
            ref = None
        if ref is not None:
            trained = await self.store.get_model(ref.owner, ref.name)
            if (
                trained is not None
                and trained.latest_version
                and (trained.guild_id in (None, guild_id))
            ):
                version = ref.version or trained.latest_version.rpartition(":")[2]
                return ResolvedModel(
                    f"{ref.owner}/{ref.name}:{version}", trigger_word=trained.trigger_word
                )
        valid = ", ".join(f"`{v}`" for _, v in (await self.model_choices(guild_id))[:10])
        raise UserFacingError(f"Unknown model `{model[:100]}`. Models you can use: {valid}.")

    # -- limits -----------------------------------------------------------------

    async def check_limits(self, user_key: str) -> None:
        """Raise LimitReached (with when to retry) if this user may not generate now."""
        cooldown = self.settings.generate_cooldown_seconds
        last = self._last_use.get(user_key)
        if cooldown and last is not None:
            wait = last + cooldown - time.monotonic()
            if wait > 0:
                raise LimitReached(
                    f"Slow down: you can generate again in {wait:.0f} s.", retry_after=wait
                )
        quota = self.settings.generations_per_user_per_day
        if quota:
            now = datetime.now(UTC)
            day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
            used = await self._count_today(user_key, day_start)
            if used >= quota:
                reset = day_start + timedelta(days=1)
                raise LimitReached(
                    f"You have used your {quota} generations for today. "
                    f"The quota resets at 00:00 UTC.",
                    retry_after=(reset - now).total_seconds(),
                )
        self.check_capacity()

    async def _count_today(self, user_key: str, day_start: datetime) -> int:
        """The user's generations today. Everyone's are counted in the store with one
        query on the day's first check, then kept up to date by :meth:`create`, so a busy
        bot does not query the store before every answer. Other processes' generations
        are seen at the next day's count."""
        today = self._used_today
        if today is None or today[0] != day_start:
            counting = self._counting
            if counting is None or counting[0] != day_start:
                load = asyncio.ensure_future(self.store.count_generations_by_user(day_start))
                counting = self._counting = (day_start, load)
            try:
                counts = await asyncio.shield(counting[1])
            finally:
                if self._counting is counting and counting[1].done():
                    self._counting = None
            today = self._used_today
            if today is None or today[0] != day_start:
                today = self._used_today = (day_start, dict(counts))
        return today[1].get(user_key, 0)

    def check_capacity(self) -> None:
        if self._closing:
            raise LimitReached("The bot is restarting. Try again in a minute.", retry_after=60)
        busy = self.queue.running >= self.queue.slots
        if busy and self.queue.waiting >= self.settings.max_queued_generations:
            raise LimitReached(
                "The bot is busy right now: too many images are waiting. Try again in a minute.",
                retry_after=60,
            )

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
        self.check_capacity()
        self._last_use[user_key] = time.monotonic()
        if self._used_today is not None:
            counts = self._used_today[1]
            counts[user_key] = counts.get(user_key, 0) + 1
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
            if self._closing:
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
            if self._closing:
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
        return await self._succeed(generation, result, size_limit, total_limit)

    async def _succeed(
        self, generation: Generation, result: GenerationResult, size_limit: int, total_limit: int
    ) -> Outcome:
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

    async def interrupted_jobs(self) -> list[Generation]:
        """Jobs a previous process of this instance (``INSTANCE_ID``) left queued or
        running (call before taking new work). Other instances' jobs are theirs."""
        unfinished = await self.store.unfinished_generations(owner=self.settings.instance_id)
        return [g for g in unfinished if g.id not in self._states]

    async def settle_interrupted_api_jobs(self) -> int:
        """Jobs of the HTTP API that a previous process left unfinished: their callers are
        gone with that process, so nobody can receive the images. Cancel their
        predictions (a running one stops being billed) and record them as failed. Call
        at start, before taking new work; returns how many there were."""
        jobs = [g for g in await self.interrupted_jobs() if g.source == "api"]

        async def settle(generation: Generation) -> None:
            prediction_id = generation.prediction_id
            if not prediction_id and generation.started_at is not None:
                prediction_id = await self._find_lost_prediction(generation)
            if prediction_id:
                try:
                    await self.replicate.cancel_prediction(prediction_id)
                except ReplicateServiceError as exc:
                    log.warning(
                        "could not cancel prediction %s of interrupted job %s: %s",
                        prediction_id,
                        generation.id,
                        exc,
                    )
            await self.store.update_generation(
                generation.id, status="failed", error=INTERRUPTED, finished_at=_now()
            )

        await asyncio.gather(*(settle(g) for g in jobs))
        if jobs:
            log.info("recorded %d interrupted HTTP API generation(s) as failed", len(jobs))
        return len(jobs)

    async def resume(self, generation: Generation, *, size_limit: int, total_limit: int) -> Outcome:
        """Finish a job a previous process started: follow its prediction to the end, or,
        if it never reached Replicate, record it as failed. Outcome.result is None when
        there are no images; the stored generation then says why."""
        prediction_id = generation.prediction_id
        if not prediction_id and generation.started_at is not None:
            prediction_id = await self._find_lost_prediction(generation)
        if not prediction_id:
            await self.store.update_generation(
                generation.id, status="failed", error=INTERRUPTED, finished_at=_now()
            )
            return Outcome(await self._reload(generation.id), None)
        try:
            result = await self.replicate.resume(prediction_id)
        except GenerationCanceled:
            await self.store.update_generation(
                generation.id, status="canceled", error="Canceled.", finished_at=_now()
            )
            return Outcome(await self._reload(generation.id), None)
        except ReplicateServiceError as exc:
            await self.store.update_generation(
                generation.id, status="failed", error=exc.user_message, finished_at=_now()
            )
            return Outcome(await self._reload(generation.id), None)
        return await self._succeed(generation, result, size_limit, total_limit)

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
        self._closing = True
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

    async def _find_lost_prediction(self, generation: Generation) -> str | None:
        """A job that died between sending its create and storing the answer may have a
        paid prediction running: find it by prompt and seed rather than lose its images.
        A prediction another job of the store already owns is not taken."""
        assert generation.started_at is not None
        since = generation.started_at - timedelta(seconds=5)
        try:
            candidates = await self.replicate.find_predictions(
                prompt=generation.prompt, seed=generation.params.get("seed"), since=since
            )
        except ReplicateServiceError as exc:
            log.warning("could not look for the prediction of %s: %s", generation.id, exc)
            return None
        async with self._claiming:  # two lost jobs alike must not both take one prediction
            for found in candidates:
                owner = await self.store.get_generation_by_prediction_id(found)
                if owner is not None and owner.id != generation.id:
                    continue
                log.info("found prediction %s of interrupted job %s", found, generation.id)
                await self.store.update_generation(generation.id, prediction_id=found)
                return found
        return None

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
