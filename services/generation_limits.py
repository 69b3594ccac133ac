"""Who may generate now: a per-user cooldown, a daily quota, and the room left in the
queue. Every refusal is a :class:`LimitReached` that says when to try again."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from services.errors import LimitReached
from services.fair_queue import FairQueue
from services.settings import Settings
from services.store import Store


class GenerationLimits:
    def __init__(self, settings: Settings, store: Store, queue: FairQueue) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        #: Set when the process stops taking jobs (shutdown): every new one is refused.
        self.closing = False
        self._last_use: dict[str, float] = {}
        self._used_today: tuple[datetime, dict[str, int]] | None = None
        self._counting: tuple[datetime, asyncio.Future[dict[str, int]]] | None = None

    async def check(self, user_key: str) -> None:
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

    def check_capacity(self) -> None:
        if self.closing:
            raise LimitReached("The bot is restarting. Try again in a minute.", retry_after=60)
        busy = self.queue.running >= self.queue.slots
        if busy and self.queue.waiting >= self.settings.max_queued_generations:
            raise LimitReached(
                "The bot is busy right now: too many images are waiting. Try again in a minute.",
                retry_after=60,
            )

    def record_use(self, user_key: str) -> None:
        """Count a job the user just asked for (its cooldown starts now)."""
        self._last_use[user_key] = time.monotonic()
        if self._used_today is not None:
            counts = self._used_today[1]
            counts[user_key] = counts.get(user_key, 0) + 1

    async def _count_today(self, user_key: str, day_start: datetime) -> int:
        """The user's generations today. Everyone's are counted in the store with one
        query on the day's first check, then kept up to date by :meth:`record_use`, so a
        busy bot does not query the store before every answer. Other processes'
        generations are seen at the next day's count."""
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
