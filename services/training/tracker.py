"""Following trainings to their end: Replicate's reports (polled here, or delivered by
the webhooks :mod:`services.webhook_dispatch` routes here) recorded in the store, the
status message kept up to date, and the final notice.

Tracking reads the store, so a restart (even after SIGKILL) picks up every unfinished
training. The final notice is sent *before* it is recorded, with a stable nonce: a crash
between the two leads to a resend that Discord drops, so the user hears about the outcome
exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.costs import PriceTable
from services.replicate import ReplicateService, ReplicateServiceError, TrainingState
from services.settings import Settings
from services.store import Store, Training
from services.store.trainings import training_topic
from services.tasks import spawn
from services.training.states import ERROR_TEXT, FINAL, state_of

log = logging.getLogger(__name__)

_PROGRESS = frozenset({"status", "step", "total_steps"})
WEBHOOK_QUIET_POLLS = 3
"""A training followed by webhooks is polled once they have been silent for this many
poll intervals (counted from its start until the first arrives): Replicate sends them on
its own schedule (nothing between its start and its first logs, and the start's may come
before the training is recorded), and a recent one says they reach the bot."""


class TrainingNotifier(Protocol):
    """What a front end does when a training changes (the Discord cog implements it)."""

    async def status_changed(self, training: Training) -> int | None:
        """Bring the status message up to date; return its id (new or existing)."""

    async def finished(self, training: Training) -> bool:
        """Send the final notice (with ``training.notice_nonce``); True once it went out."""


class TrainingTracker:
    def __init__(
        self, settings: Settings, replicate: ReplicateService, store: Store, prices: PriceTable
    ) -> None:
        self.settings = settings
        self.replicate = replicate
        self.store = store
        self.prices = prices
        #: Called with each training that ends, once (metrics, budgets).
        self.end_hooks: list[Callable[[Training], None]] = []
        self.notifier: TrainingNotifier | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        #: Local ids of the trainings webhooks came for, by Replicate training id.
        self._local_ids: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._poll_backoff = 0.0

    def wake(self) -> None:
        """Poll now rather than at the end of the interval (a training just started)."""
        self._wake.set()

    def ended(self, training: Training) -> None:
        for hook in list(self.end_hooks):
            try:
                hook(training)
            except Exception:
                log.exception("training end hook failed for %s", training.id)

    async def abandoned(self, training: Training) -> None:
        """A training whose starting process died before it reached Replicate (recorded
        failed by the store): its requester is told."""
        self.ended(training)
        await self.apply(training, state_of(training))

    async def record_status_message(self, local_id: str, message_id: int) -> None:
        await self.store.update_training(local_id, status_message_id=message_id)

    def lock(self, local_id: str) -> asyncio.Lock:
        return self._locks.setdefault(local_id, asyncio.Lock())

    async def apply(
        self, training: Training, state: TrainingState, *, webhook: bool = False
    ) -> Training:
        """Record Replicate's view of a training, update the status message, and send
        the final notice once the training has ended."""
        applied = await self._apply(training.id, state, webhook=webhook)
        return applied or training

    async def apply_webhook(
        self, training_id: str, webhook_id: str, state: Callable[[], TrainingState]
    ) -> str:
        """Apply a delivery about the Replicate training ``training_id`` (``state()`` reads
        it), recording its ``webhook_id`` in the same transaction: ``applied``,
        ``duplicate`` or ``unknown`` (no training of ours; the id is then recorded alone)."""
        local_id = self._local_ids.get(training_id)
        if local_id is None:
            training = await self.store.get_training_by_replicate_id(training_id)
            if training is None:
                recorded = await self.store.record_webhook(webhook_id, datetime.now(UTC))
                return "unknown" if recorded else "duplicate"
            local_id = self._local_ids[training_id] = training.id
        applied = await self._apply(local_id, state(), webhook=True, webhook_id=webhook_id)
        if applied is None:
            return "duplicate"
        if applied.status in FINAL and applied.notified_at is not None:
            self._local_ids.pop(training_id, None)
        return "applied"

    async def _apply(
        self,
        local_id: str,
        state: TrainingState,
        *,
        webhook: bool,
        webhook_id: str | None = None,
    ) -> Training | None:
        """The training as applied; None for a delivery seen before or a training gone.

        What changes, whether the status message is due for an edit (at most every
        TRAINING_STATUS_EDIT_SECONDS across processes) and the delivery's id are read and
        written in one transaction."""
        now = datetime.now(UTC)
        interval = timedelta(seconds=self.settings.training_status_edit_seconds)

        def decide(current: Training) -> dict[str, Any]:
            changes: dict[str, Any] = {"last_webhook_at": now} if webhook else {}
            if current.status not in FINAL:
                changes.update(self._changes(current, state))
            if _PROGRESS.intersection(changes) and self._shows_status(current):
                last = current.last_status_edit_at
                final = changes.get("status", current.status) in FINAL
                if final or last is None or last <= now - interval:
                    changes["last_status_edit_at"] = now
            return changes

        async with self.lock(local_id):
            change = await self.store.change_training(
                local_id, decide, webhook_id=webhook_id, received_at=now
            )
            if change is None or change.training is None:
                return None
            current, changes = change.training, change.changes
            if changes.get("status") in FINAL:
                self.ended(current)
            if current.status == "succeeded" and current.version:
                await self.store.upsert_model(
                    current.model_owner,
                    current.model_name,
                    guild_id=current.guild_id,
                    creator_key=current.user_key,
                    trigger_word=current.trigger_word,
                    latest_version=current.version.rpartition(":")[2],
                )
            if "last_status_edit_at" in changes:
                await self._show_status(current)
            if current.status in FINAL and current.notified_at is None:
                await self._notify(current)
                current = await self.store.get_training(current.id) or current
        if changes:
            # A process without Discord (or without this guild) may have applied it.
            self.store.events.publish(training_topic(current.id))
        return current

    def on_notice(self, topic: str) -> None:
        kind, _, local_id = topic.partition(":")
        if kind == "training" and self.notifier is not None:
            spawn(self.refresh(local_id), name=f"training-refresh-{local_id}")

    async def refresh(self, local_id: str) -> None:
        """Bring the status message and the notice of a training up to date with the
        store, after another process recorded a change (its webhook went there)."""
        async with self.lock(local_id):
            current = await self.store.get_training(local_id)
            if current is None or current.notified_at is not None:
                return
            final = current.status in FINAL
            if not final:
                await self._update_status_message(current, final=False)
                return
            if current.last_status_edit_at is None or (
                current.completed_at and current.last_status_edit_at < current.completed_at
            ):
                await self._update_status_message(current, final=True)
            await self._notify(current)

    def _changes(self, current: Training, state: TrainingState) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if state.status != current.status and state.status in ("starting", "processing", *FINAL):
            changes["status"] = state.status
        if state.step is not None and state.step != current.step:
            changes["step"] = state.step
        if state.total is not None and state.total != current.total_steps:
            changes["total_steps"] = state.total
        if state.started_at and current.started_at is None:
            changes["started_at"] = state.started_at
        if state.status in FINAL:
            changes["completed_at"] = state.completed_at or datetime.now(UTC)
            if state.version:
                changes["version"] = state.version
            if state.weights:
                changes["weights"] = state.weights
            if state.error:
                changes["error"] = state.error[:ERROR_TEXT]
            changes["predict_time"] = state.predict_time
            changes["cost_usd"] = self.prices.training_cost(state.predict_time)
        return changes

    def _shows_status(self, training: Training) -> bool:
        return self.notifier is not None and training.channel_id is not None

    async def _update_status_message(self, training: Training, *, final: bool) -> None:
        if not self._shows_status(training):
            return
        now = datetime.now(UTC)
        interval = timedelta(seconds=self.settings.training_status_edit_seconds)
        if not final and not await self.store.claim_status_edit(training.id, now, interval):
            return
        if final:
            await self.store.update_training(training.id, last_status_edit_at=now)
        await self._show_status(training)

    async def _show_status(self, training: Training) -> None:
        """Edit the status message (its edit already claimed)."""
        assert self.notifier is not None
        try:
            message_id = await self.notifier.status_changed(training)
        except Exception:
            log.exception("status message update failed for training %s", training.id)
            return
        if message_id is not None and message_id != training.status_message_id:
            await self.record_status_message(training.id, message_id)

    async def _notify(self, training: Training) -> None:
        if self.notifier is None or training.channel_id is None:
            if training.channel_id is None:
                await self.store.claim_notification(training.id, datetime.now(UTC))
            return
        try:
            sent = await self.notifier.finished(training)
        except Exception:
            log.exception("final notice failed for training %s; will retry", training.id)
            return
        if sent:
            await self.store.claim_notification(training.id, datetime.now(UTC))

    async def poll_once(self) -> int:
        """Poll every unfinished training that has no recent webhook (none for
        WEBHOOK_QUIET_POLLS intervals). Returns how many."""
        interval = timedelta(seconds=self.settings.training_poll_seconds)
        quiet = interval * WEBHOOK_QUIET_POLLS
        now = datetime.now(UTC)
        polled = 0
        for training in await self.store.unfinished_trainings():
            if training.status in FINAL:
                await self.apply(training, state_of(training))
                continue
            if training.training_id is None:
                continue
            # Started with webhooks: they are expected from its start on.
            heard = training.last_webhook_at or (
                training.created_at if self.settings.webhook_url else None
            )
            if heard and now - heard < quiet:
                continue
            if not await self.store.claim_poll(training.id, now, interval):
                continue
            state = await self.replicate.get_training(training.training_id)
            polled += 1
            await self.apply(training, state)
        return polled

    async def run(self) -> None:
        """Poll forever: at once on start (resuming after a restart), then every
        TRAINING_POLL_SECONDS, backing off while Replicate fails."""
        interval = self.settings.training_poll_seconds
        while True:
            try:
                await self.poll_once()
                self._poll_backoff = 0.0
            except ReplicateServiceError as exc:
                self._poll_backoff = min(max(interval, self._poll_backoff * 2 or interval), 600)
                log.warning(
                    "polling trainings failed (%s); next try in %.0f s", exc, self._poll_backoff
                )
            except Exception:
                log.exception("polling trainings failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_backoff or interval)
