"""A job's progress message: the interaction's original response, edited as the job
waits in the queue and runs (not an extension: no setup())."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import discord

from cogs._messages import edit_response
from services.generation import JobState
from services.tasks import spawn

log = logging.getLogger(__name__)

EDIT_INTERVAL = 1.5
"""Least seconds between two edits of a progress message."""


def progress_text(state: JobState) -> str:
    if state.phase == "queued":
        return f"⏳ Queued: position {state.position} of {state.queue_size}."
    return f"🎨 Generating… {state.elapsed:.0f} s"


class ProgressMessage:
    """Edits the interaction's original response, at most every EDIT_INTERVAL seconds.

    The newest state always wins: an edit asked for too early is sent once the interval
    has passed, and ``close`` drops anything still pending."""

    def __init__(
        self,
        interaction: discord.Interaction,
        view: discord.ui.View,
        answered: asyncio.Future[None] | None = None,
    ) -> None:
        self.interaction = interaction
        self.view = view
        self.answered = answered
        self._last = 0.0
        self._pending: Callable[[], str] | None = None
        self._shown: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    async def show(self, text: Callable[[], str], *, delay: float = 0.0) -> None:
        """Show what ``text()`` says when the edit is sent: as soon as the edit interval
        allows, and not before ``delay``."""
        if self.closed or text() == self._shown:
            return
        self._pending = text
        if self._task is None or self._task.done():
            wait = max(self._last + EDIT_INTERVAL - time.monotonic(), delay)
            self._task = spawn(self._flush_later(wait), name=f"progress-{self.interaction.id}")

    async def _flush_later(self, wait: float) -> None:
        """Edits run in their own task so that the job never waits for Discord."""
        while True:
            if wait > 0:
                await asyncio.sleep(wait)
            # Once started, an edit completes even if close() comes meanwhile (close waits).
            await asyncio.shield(self._flush())
            if self.closed or self._pending is None:
                return
            wait = self._last + EDIT_INTERVAL - time.monotonic()

    async def _flush(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, None
            if self.closed or pending is None:
                return
            text = pending()
            if text == self._shown:
                return
            if self.answered is not None:
                await self.answered
            self._last = time.monotonic()
            self._shown = text
            try:
                await edit_response(self.interaction, content=text, view=self.view)
            except discord.HTTPException as exc:
                log.info("progress edit failed for %s: %s", self.interaction.id, exc)

    def drop_pending(self) -> None:
        self._pending = None

    async def close(self) -> None:
        """Drop pending edits and wait for one in flight, so none lands after the result;
        and for the answer, which the result edits."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        async with self._lock:
            pass
        if self.answered is not None:
            await self.answered
