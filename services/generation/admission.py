"""Who may generate now: a per-user cooldown, a daily quota and the room left in the
queue, checked and used up in the store in one step (:mod:`services.store.jobs`).

Requests that arrive together are admitted together, in one transaction, in the order
they came. A refusal uses nothing up and is a :class:`LimitReached` that says when to try
again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from datetime import UTC, datetime
from typing import Final

from services.budgets import refusal_text as budget_refusal_text
from services.errors import LimitReached
from services.job_policy import JobPolicy
from services.ownership import LeaseKeeper
from services.settings import Settings
from services.store import Generation, NewGeneration, Store
from services.store.jobs import AdmitRequest, GenerationLimits, Refusal
from services.tasks import spawn

log = logging.getLogger(__name__)

#: Requests admitted in one transaction at most.
BATCH: Final = 500
RESTARTING: Final = "The bot is restarting. Try again in a minute."


class Admission:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        keeper: LeaseKeeper,
        policy: JobPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keeper = keeper
        #: The limits of each job's server and API key (without it, the owner's only).
        self.policy = policy
        #: Set when the process stops taking jobs (shutdown): every new one is refused.
        self.closing = False
        self._pending: list[tuple[AdmitRequest, asyncio.Future[Generation | Refusal]]] = []
        self._runner: asyncio.Task[None] | None = None

    def limits(self) -> GenerationLimits:
        s = self.settings
        return GenerationLimits(
            cooldown=s.generate_cooldown_seconds,
            per_day=s.generations_per_user_per_day,
            max_running=s.max_concurrent_generations,
            max_queued=s.max_queued_generations,
        )

    async def limits_for(self, job: NewGeneration) -> GenerationLimits:
        if self.policy is None:
            return self.limits()
        return await self.policy.generation_limits(job)

    async def admit(self, job: NewGeneration, *, cooldown: bool = True) -> Generation:
        """Record ``job`` as queued, leased to this process, if every limit allows it
        (the per-user cooldown only with ``cooldown``)."""
        if self.closing:
            raise LimitReached(RESTARTING, retry_after=60)
        limits = await self.limits_for(job)
        now = datetime.now(UTC)
        if not cooldown:
            limits = dataclasses.replace(limits, cooldown=0)
        request = AdmitRequest(job, limits, self.keeper.owner, now, self.keeper.lease_until(now))
        future: asyncio.Future[Generation | Refusal] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._runner is None or self._runner.done():
            self._runner = spawn(self._run(), name="generation-admission")
        result = await future
        if isinstance(result, Refusal):
            if self.policy is not None:
                self.policy.refused(result)
            raise LimitReached(refusal_text(result), retry_after=result.retry_after)
        return result

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[:BATCH]
            del self._pending[: len(batch)]
            try:
                results = await self.store.admit_generations([r for r, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def refusal_text(refusal: Refusal) -> str:
    if refusal.reason == "cooldown":
        return f"Slow down: you can generate again in {math.ceil(refusal.retry_after)} s."
    if refusal.reason == "budget":
        return budget_refusal_text(refusal)
    if refusal.reason == "quota":
        return (
            f"You have used your {refusal.limit:.0f} generations for today. "
            "The quota resets at 00:00 UTC."
        )
    return "The bot is busy right now: too many images are waiting. Try again in a minute."
