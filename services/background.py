"""The work that runs beside the front ends for as long as the process does.

``python bot.py`` and ``python bot.py --http-only`` both run it, from ``BotApp``: the
training tracker, whose first round resumes the trainings a previous process left
unfinished, and the pruning of old webhook ids. The Discord front end only lends the
tracker its notifier (``TrainingService.notifier``) and makes it wait until the bot is
ready, so that status messages and notices can go out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from services.app import Services
from services.tasks import spawn

log = logging.getLogger(__name__)


class BackgroundWork:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, *, before_tracking: Callable[[], Awaitable[object]] | None = None) -> None:
        """Start the tracker (after ``before_tracking``, when given) and the pruner."""
        self._tasks = [
            spawn(self._track(before_tracking), name="training-tracker"),
            spawn(self.services.webhooks.run_pruner(), name="webhook-pruner"),
        ]

    async def _track(self, before_tracking: Callable[[], Awaitable[object]] | None) -> None:
        if before_tracking is not None:
            await before_tracking()
        await self.services.trainings.run_tracker()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
