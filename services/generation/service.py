"""Image generation jobs: creation, cancelation and shutdown; the run itself is
:mod:`services.generation.runner`'s.

Shared by the Discord front end (``cogs/generate.py``) and the HTTP API. The store is the
single source of truth: a job is admitted there in one step with the limits it uses up
(:mod:`services.generation.admission`), waits in the queue that lives there
(:mod:`services.generation.queue`), and belongs to the process that holds its lease
(:mod:`services.ownership`). Every state change is conditional, so a job ends once, and
only the process that ended it posts its images.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp

from services.costs import load_prices
from services.generation.actions import JobPlanner, reroll_of
from services.generation.admission import Admission
from services.generation.jobs import CANCELED, Listener, Outcome, Reroll
from services.generation.models import ModelCatalog
from services.generation.queue import StoreQueue
from services.generation.requests import JobRequest
from services.generation.runner import JobRunner
from services.generation.sources import ImageSources
from services.job_policy import JobPolicy
from services.ownership import LeaseKeeper
from services.replicate import ReplicateService
from services.settings import Settings
from services.store import Generation, NewGeneration, Store
from services.tasks import spawn


class GenerationService:
    def __init__(
        self,
        settings: Settings,
        replicate: ReplicateService,
        store: Store,
        keeper: LeaseKeeper,
        policy: JobPolicy | None = None,
        http: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        """``http``: the process's session, for input images given as links."""
        self.settings = settings
        self.replicate = replicate
        self.store = store
        self.keeper = keeper
        self.policy = policy
        self.prices = policy.prices if policy is not None else load_prices(settings.prices_file)
        self.admission = Admission(settings, store, keeper, policy)
        self.queue = StoreQueue(store, keeper, settings.max_concurrent_generations)
        self.models = ModelCatalog(settings, store, policy.guild_settings if policy else None)
        self.planner = JobPlanner(settings, replicate, self.models)
        self.sources = ImageSources(settings, replicate, store, http or _no_http)
        self.runner = JobRunner(
            settings,
            replicate,
            store,
            keeper,
            self.prices,
            self.admission,
            self.queue,
            self.sources,
        )
        #: Fit a result's images and record the job as succeeded (:meth:`JobRunner.complete`).
        self.complete = self.runner.complete
        self._unsubscribe = store.events.subscribe(self._on_notice)

    @property
    def closing(self) -> bool:
        return self.admission.closing

    # -- jobs -------------------------------------------------------------------

    async def create(
        self,
        request: JobRequest,
        *,
        user_key: str,
        user_id: int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        interaction_id: int | None = None,
        source: str = "discord",
        cooldown: bool = True,
        job_id: str | None = None,
    ) -> Generation:
        """Check the request (its options against what the model takes), then admit it
        (every limit, in one step in the store). ``cooldown=False``: the per-user pause
        does not refuse it (a training's sample), though it counts as a generation."""
        prompt, params = await self.planner.params(request, guild_id)
        generation = await self.admission.admit(
            NewGeneration(
                user_key=user_key,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                prompt=prompt,
                model=request.model.ref,
                params=params,
                interaction_id=interaction_id,
                source=source,  # type: ignore[arg-type]
                id=job_id,
                cost_reserved=self.prices.estimate_generation(
                    request.model.ref, int(params.get("count") or 1)
                ),
            ),
            cooldown=cooldown,
        )
        self.sources.hold(generation.id, request.images)
        return generation

    async def get(self, gen_id: str) -> Generation | None:
        return await self.store.get_generation(gen_id)

    async def record_result_message(self, gen_id: str, message_id: int) -> None:
        """Remember the message that shows the job's images."""
        await self.store.update_generation(gen_id, result_message_id=message_id)

    async def reroll_of(self, gen_id: str) -> Reroll | None:
        """The job's request as its requester made it, to run again; None if it is gone."""
        original = await self.store.get_generation(gen_id)
        return reroll_of(original) if original is not None else None

    async def run(
        self, generation: Generation, listener: Listener, *, size_limit: int, total_limit: int
    ) -> Outcome:
        """Wait for the job's turn, run the prediction, download and fit the images.

        Always records how the job ended; domain errors are re-raised after that."""
        return await self.runner.run(
            generation, listener, size_limit=size_limit, total_limit=total_limit
        )

    async def cancel(self, gen_id: str) -> bool:
        """Cancel a queued job, or stop a running one, wherever it runs. True if
        something was canceled."""
        result = await self.store.cancel_generation(gen_id, datetime.now(UTC), CANCELED)
        if result.outcome == "canceled":
            return True
        if result.outcome != "requested" or result.generation is None:
            return False
        # Whoever runs the job sees the request when its create answers, if it has not yet.
        await self.runner.stop_predictions(result.generation)
        return True

    def _on_notice(self, topic: str) -> None:
        """A webhook about a prediction followed here reached another process: poll it
        now. A Cancel pressed in another process: stop the prediction from here too."""
        kind, _, object_id = topic.partition(":")
        if kind == "prediction":
            self.replicate.poke_prediction(object_id)
            return
        if kind != "gen":
            return
        state = self.runner.state(object_id)
        if state is not None and state.phase == "generating" and state.prediction_id:
            spawn(self._check_cancel(state.gen_id), name=f"check-cancel-{state.gen_id}")

    async def _check_cancel(self, gen_id: str) -> None:
        job = await self.store.get_generation(gen_id)
        if job is not None and job.cancel_requested_at is not None:
            await self.runner.stop_predictions(job)

    async def shutdown(self, grace: float) -> None:
        """Stop taking jobs; let running ones finish for up to ``grace`` seconds.

        Jobs still waiting, and running ones past the grace period, are handed back to
        the store for another process (or this one, restarted) to finish; those of the
        HTTP API, whose callers go away with this process, are failed instead."""
        self.admission.closing = True
        await self.runner.drain(grace)
        self.queue.close()
        self._unsubscribe()

    async def end(self, gen_id: str, status: str, error: str) -> Outcome:
        """Record that a job this process owns ended without images."""
        return await self.runner.end(gen_id, status, error)

    async def cancel_remote(self, prediction_id: str | None) -> None:
        """Stop a prediction on Replicate (no more billing); a failure is only logged."""
        await self.runner.cancel_remote(prediction_id)


def _no_http() -> aiohttp.ClientSession:
    raise RuntimeError("this GenerationService was built without an HTTP session")
