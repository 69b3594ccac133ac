"""Generations a previous process of this instance (``INSTANCE_ID``) left queued or running.

A job whose prediction reached Replicate is followed to its end; one that died between
sending its create and storing the answer has its prediction looked for (by prompt and
seed) rather than lost; the rest are recorded as failed. Jobs of the HTTP API are settled
at start: their callers are gone, so their predictions are canceled. Other instances'
jobs are theirs.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from services.generation import INTERRUPTED, GenerationService, Outcome
from services.replicate import GenerationCanceled, ReplicateServiceError
from services.store import Generation

log = logging.getLogger(__name__)


class GenerationRecovery:
    def __init__(self, jobs: GenerationService) -> None:
        self.jobs = jobs
        self.settings = jobs.settings
        self.replicate = jobs.replicate
        self.store = jobs.store
        self._claiming = asyncio.Lock()

    async def interrupted_jobs(self) -> list[Generation]:
        """Jobs a previous process of this instance (``INSTANCE_ID``) left queued or
        running (call before taking new work). Other instances' jobs are theirs."""
        unfinished = await self.store.unfinished_generations(owner=self.settings.instance_id)
        return [g for g in unfinished if not self.jobs.is_running(g.id)]

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
            return await self._ended(generation.id, "failed", INTERRUPTED)
        try:
            result = await self.replicate.resume(prediction_id)
        except GenerationCanceled:
            return await self._ended(generation.id, "canceled", "Canceled.")
        except ReplicateServiceError as exc:
            return await self._ended(generation.id, "failed", exc.user_message)
        return await self.jobs.complete(
            generation, result, size_limit=size_limit, total_limit=total_limit
        )

    async def _ended(self, gen_id: str, status: str, error: str) -> Outcome:
        """Record a job that ended without images."""
        await self.store.update_generation(gen_id, status=status, error=error, finished_at=_now())
        generation = await self.store.get_generation(gen_id)
        assert generation is not None
        return Outcome(generation, None)

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


def _now() -> datetime:
    return datetime.now(UTC)
