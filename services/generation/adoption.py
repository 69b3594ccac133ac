"""Generations this process took over from a process that is gone (or from its own
previous run): see :mod:`services.ownership` for how a job is taken over, once.

A job whose prediction reached Replicate is followed to its end; one that died between
sending its create and storing the answer has its prediction looked for (by prompt and
seed) rather than lost; a queued job runs here. Jobs of the HTTP API are settled at once:
their callers went away with the process that had them, so their predictions are
canceled and they are recorded as failed. Discord jobs are handed to the Discord front
end (:attr:`GenerationAdoption.on_discord_job`), which posts the result in the channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from services.generation.jobs import CANCELED, INTERRUPTED, Outcome
from services.generation.predict import resume_all
from services.generation.service import GenerationService
from services.ownership import LeaseKeeper
from services.replicate import GenerationCanceled, ReplicateServiceError
from services.store import Generation

log = logging.getLogger(__name__)

DiscordJobHandler = Callable[[Generation], Awaitable[None]]


class GenerationAdoption:
    def __init__(self, jobs: GenerationService, keeper: LeaseKeeper) -> None:
        self.jobs = jobs
        self.replicate = jobs.replicate
        self.store = jobs.store
        self._discord: DiscordJobHandler | None = None
        self._discord_ready = asyncio.Event()
        self._can_finish_discord_jobs = "discord" in keeper.sources
        self._claiming = asyncio.Lock()
        keeper.on_adopt(self.adopt)

    @property
    def on_discord_job(self) -> DiscordJobHandler | None:
        """Finishes a Discord job taken over here (set by the Discord front end)."""
        return self._discord

    @on_discord_job.setter
    def on_discord_job(self, handler: DiscordJobHandler | None) -> None:
        self._discord = handler
        if handler is None:
            self._discord_ready.clear()
        else:
            self._discord_ready.set()

    async def adopt(self, job: Generation) -> None:
        try:
            if job.source == "api":
                await self.settle_api_job(job)
                return
            if self._can_finish_discord_jobs:
                # Jobs may be taken over while the Discord front end is still loading.
                await self._discord_ready.wait()
            if self._discord is not None:
                await self._discord(job)
            else:
                log.warning("no front end here can finish Discord job %s; handing it back", job.id)
                await self.store.release_leases(self.jobs.keeper.owner, datetime.now(UTC), [job.id])
        except Exception:
            log.exception("could not finish generation %s taken over here", job.id)

    async def settle_api_job(self, job: Generation) -> None:
        """An HTTP API job whose caller is gone: stop its prediction, record it failed."""
        prediction_id = job.prediction_id
        if not prediction_id and job.started_at is not None:
            prediction_id = await self._find_lost_prediction(job)
        several = [p for p in job.params.get("predictions") or [] if isinstance(p, str)]
        for each in dict.fromkeys([prediction_id, *several]):
            if not each:
                continue
            try:
                await self.replicate.cancel_prediction(each)
            except ReplicateServiceError as exc:
                log.warning(
                    "could not cancel prediction %s of interrupted job %s: %s", each, job.id, exc
                )
        await self.jobs.end(job.id, "failed", INTERRUPTED)
        log.info("recorded interrupted HTTP API generation %s as failed", job.id)

    async def follow(self, job: Generation, *, size_limit: int, total_limit: int) -> Outcome:
        """Finish a running job taken over here: follow its prediction to the end, or,
        if it never reached Replicate, record it as failed. Outcome.result is None when
        there are no images; the stored generation then says why."""
        prediction_id = job.prediction_id
        if not prediction_id and job.started_at is not None:
            prediction_id = await self._find_lost_prediction(job)
        if not prediction_id:
            return await self.jobs.end(job.id, "failed", INTERRUPTED)
        several = [p for p in job.params.get("predictions") or [] if isinstance(p, str)]
        if job.cancel_requested_at is not None:
            for each in several or [prediction_id]:
                await self.jobs.cancel_remote(each)
        try:
            if len(several) > 1:
                result = await resume_all(self.replicate, several)
            else:
                result = await self.replicate.resume(prediction_id)
        except GenerationCanceled:
            return await self.jobs.end(job.id, "canceled", CANCELED)
        except ReplicateServiceError as exc:
            return await self.jobs.end(job.id, "failed", exc.user_message)
        return await self.jobs.complete(job, result, size_limit=size_limit, total_limit=total_limit)

    async def _find_lost_prediction(self, job: Generation) -> str | None:
        """A job that died between sending its create and storing the answer may have a
        paid prediction running: find it by prompt and seed rather than lose its images.
        A prediction another job of the store already owns is not taken."""
        assert job.started_at is not None
        since = job.started_at - timedelta(seconds=5)
        try:
            candidates = await self.replicate.find_predictions(
                prompt=job.prompt, seed=job.params.get("seed"), since=since
            )
        except ReplicateServiceError as exc:
            log.warning("could not look for the prediction of %s: %s", job.id, exc)
            return None
        async with self._claiming:  # two lost jobs alike must not both take one prediction
            for found in candidates:
                owner = await self.store.get_generation_by_prediction_id(found)
                if owner is not None and owner.id != job.id:
                    continue
                if await self.store.set_prediction(job.id, found, self.jobs.keeper.owner):
                    log.info("found prediction %s of interrupted job %s", found, job.id)
                    return found
        return None
