"""LoRA trainings: checks, start, tracking (polling, and the webhooks that
:mod:`services.webhook_dispatch` routes here) and the final notice.

Every training is in the store from the moment it exists on Replicate, and tracking reads
the store, so a restart (even after SIGKILL) picks up every unfinished job. The final
notice is sent *before* it is recorded, with a stable nonce: a crash between the two
leads to a resend that Discord drops, so the user hears about the outcome exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from services.budgets import refusal_text as budget_refusal_text
from services.costs import load_prices
from services.errors import LimitReached, PermissionRefused, UserFacingError
from services.job_policy import JobPolicy
from services.ownership import LeaseKeeper
from services.replicate import ReplicateService, ReplicateServiceError, TrainingState
from services.settings import Settings
from services.store import NewTraining, Store, Training
from services.store.jobs import Refusal
from services.store.trainings import TrainingLimits, training_topic
from services.tasks import spawn
from services.zip_gate import ZipCheckGate
from services.zipcheck import ZipLimits, ZipReport, check_zip_async

log = logging.getLogger(__name__)

TRIGGER_WORD = re.compile(r"^[A-Za-z0-9_]{2,32}$")
MODEL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?$")
MODEL_NAME_RULE = (
    "Model names may use lowercase letters, digits, '-', '_' and '.', "
    "and must start and end with a letter or digit (at most 100 characters)."
)
FINAL = ("succeeded", "failed", "canceled")
_PROGRESS = frozenset({"status", "step", "total_steps"})
WEBHOOK_QUIET_POLLS = 3
"""A training followed by webhooks is polled once they have been silent for this many
poll intervals (counted from its start until the first arrives): Replicate sends them on
its own schedule (nothing between its start and its first logs, and the start's may come
before the training is recorded), and a recent one says they reach the bot."""
WEBHOOK_EVENTS = ("start", "logs", "completed")
ERROR_TEXT = 300


class TrainingNotifier(Protocol):
    """What a front end does when a training changes (the Discord cog implements it)."""

    async def status_changed(self, training: Training) -> int | None:
        """Bring the status message up to date; return its id (new or existing)."""

    async def finished(self, training: Training) -> bool:
        """Send the final notice (with ``training.notice_nonce``); True once it went out."""


@dataclass(frozen=True)
class StartedTraining:
    training: Training
    report: ZipReport
    created_model: bool


def check_names(trigger_word: str, model_name: str) -> None:
    problems = []
    if not TRIGGER_WORD.fullmatch(trigger_word):
        problems.append(
            f"Trigger word `{trigger_word[:40]}` is not valid: use 2-32 letters, digits or '_'."
        )
    if not MODEL_NAME.fullmatch(model_name):
        problems.append(f"Model name `{model_name[:100]}` is not valid. {MODEL_NAME_RULE}")
    if problems:
        raise UserFacingError("\n".join(problems))


def training_refusal(refusal: Refusal) -> LimitReached:
    if refusal.reason == "budget":
        return LimitReached(budget_refusal_text(refusal), retry_after=refusal.retry_after)
    if refusal.reason == "quota":
        return LimitReached(
            f"You have used your {refusal.limit:.0f} trainings for today. "
            "The quota resets at 00:00 UTC.",
            retry_after=refusal.retry_after,
        )
    return LimitReached(
        f"{refusal.limit:.0f} trainings are already running here "
        f"(the limit is {refusal.limit:.0f}). Try again when one has finished.",
        retry_after=refusal.retry_after,
    )


def progress_bar(step: int | None, total: int | None, width: int = 20) -> str:
    if not total or step is None:
        return "▱" * width
    filled = min(width, round(width * step / total))
    return "▰" * filled + "▱" * (width - filled)


def eta_seconds(training: Training, now: datetime) -> float | None:
    if not training.started_at or not training.step or not training.total_steps:
        return None
    elapsed = (now - training.started_at).total_seconds()
    return elapsed * (training.total_steps - training.step) / training.step


class TrainingService:
    def __init__(
        self,
        settings: Settings,
        replicate: ReplicateService,
        store: Store,
        keeper: LeaseKeeper,
        policy: JobPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.replicate = replicate
        self.store = store
        self.keeper = keeper
        #: The limits of each training's server and API key (without it, the owner's only).
        self.policy = policy
        self.prices = policy.prices if policy is not None else load_prices(settings.prices_file)
        #: Called with each training that ends, once (metrics, budgets).
        self.end_hooks: list[Callable[[Training], None]] = []
        keeper.on_abandoned_training(self._abandoned)
        store.events.subscribe(self._on_notice)
        self.notifier: TrainingNotifier | None = None
        self._owner: str | None = settings.replicate_owner
        self._locks: dict[str, asyncio.Lock] = {}
        #: Local ids of the trainings webhooks came for, by Replicate training id.
        self._local_ids: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._poll_backoff = 0.0
        self.zip_checks = ZipCheckGate(settings.max_concurrent_zip_checks)

    # -- checks ------------------------------------------------------------------

    @property
    def zip_limits(self) -> ZipLimits:
        s = self.settings
        return ZipLimits(
            max_zip_bytes=s.max_train_zip_mb * 1024 * 1024,
            min_images=s.min_train_images,
            max_images=s.max_train_images,
        )

    def role_allowed(self, role_ids: list[int]) -> bool:
        allowed = self.settings.train_role_ids
        return not allowed or any(role in allowed for role in role_ids)

    async def roles_needed(self, guild_id: int | None, role_ids: list[int]) -> list[int] | None:
        """None if a member with ``role_ids`` may train in ``guild_id``; else the roles
        one of which is needed (the owner's rule and the server's both apply)."""
        if self.policy is None:
            return None if self.role_allowed(role_ids) else list(self.settings.train_role_ids)
        return await self.policy.roles_needed(guild_id, role_ids)

    async def owner(self) -> str:
        if self._owner is None:
            self._owner = (await self.replicate.account()).username
        return self._owner

    @property
    def limits(self) -> TrainingLimits:
        """The owner's limits."""
        return TrainingLimits(
            per_day=self.settings.trainings_per_user_per_day,
            per_guild=self.settings.max_active_trainings_per_guild,
        )

    async def limits_for(
        self, user_key: str, guild_id: int | None, now: datetime
    ) -> TrainingLimits:
        if self.policy is None:
            return self.limits
        return await self.policy.training_limits(user_key, guild_id, now)

    async def check_limits(self, user_key: str, guild_id: int | None) -> None:
        """Refuse early (before a zip is downloaded) what admission would refuse now.
        Only a hint: the training is admitted later, in one step (:meth:`start`)."""
        now = datetime.now(UTC)
        limits = await self.limits_for(user_key, guild_id, now)
        if limits.per_day:
            day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
            used = await self.store.count_trainings_since(user_key, day_start)
            if used >= limits.per_day:
                reset = day_start + timedelta(days=1)
                wait = (reset - now).total_seconds()
                raise training_refusal(Refusal("quota", wait, limits.per_day))
        if await self.store.count_active_trainings(guild_id) >= limits.per_guild:
            raise training_refusal(Refusal("busy", 600.0, limits.per_guild))
        for budget in limits.budgets:
            if await self.store.month_spend(budget) >= budget.limit:
                refusal = Refusal(
                    "budget", (budget.until - now).total_seconds(), budget.limit, budget
                )
                if self.policy is not None:
                    self.policy.refused(refusal)
                raise training_refusal(refusal)

    async def check_destination(self, model_name: str, user_key: str) -> str:
        """Return ``owner/name``; refuse a model someone else created through the bot."""
        owner = await self.owner()
        existing = await self.store.get_model(owner, model_name)
        if existing is not None and existing.creator_key != user_key:
            raise PermissionRefused(
                f"The model `{owner}/{model_name}` belongs to someone else. "
                "Pick another model name."
            )
        if existing is None and await self.replicate.model_exists(owner, model_name):
            raise PermissionRefused(
                f"The model `{owner}/{model_name}` already exists and was not created through "
                "this bot. Pick another model name."
            )
        return f"{owner}/{model_name}"

    def check_upload(self, file_name: str, size: int) -> None:
        """Refuse, before it is downloaded, a file that cannot be a training zip."""
        limit_mb = self.settings.max_train_zip_mb
        if not file_name.lower().endswith(".zip"):
            raise UserFacingError(f"`{file_name}` is not a .zip file. Attach a zip of photos.")
        if size > limit_mb * 1024 * 1024:
            raise UserFacingError(
                f"`{file_name}` is {size / 1024 / 1024:.0f} MB; the limit is {limit_mb} MB."
            )

    async def check_zip(
        self,
        path: Path,
        declared_size: int | None = None,
        on_wait: Callable[[int], Awaitable[None]] | None = None,
    ) -> ZipReport:
        """Check the zip when its turn comes (:class:`ZipCheckGate`); ``on_wait(ahead)``
        is told when it has to wait."""
        async with self.zip_checks.turn(on_wait):
            report = await check_zip_async(path, self.zip_limits, declared_size=declared_size)
        if not report.ok:
            raise UserFacingError(report.message())
        return report

    # -- start -------------------------------------------------------------------

    async def start(
        self,
        *,
        zip_path: Path,
        trigger_word: str,
        model_name: str,
        steps: int,
        user_key: str,
        user_id: int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        source: str = "discord",
        declared_size: int | None = None,
        on_checked: Callable[[ZipReport], Awaitable[None]] | None = None,
        on_wait: Callable[[int], Awaitable[None]] | None = None,
    ) -> StartedTraining:
        """Check everything, then upload, ensure the destination, and create the training.

        Nothing costs money until every check passed; the job is in the store before this
        returns, and before any answer goes out."""
        check_names(trigger_word, model_name)
        if not 100 <= steps <= 4000:
            raise UserFacingError("Steps must be between 100 and 4000.")
        await self.check_limits(user_key, guild_id)
        destination = await self.check_destination(model_name, user_key)
        report = await self.check_zip(zip_path, declared_size, on_wait)
        if on_checked is not None:
            await on_checked(report)
        owner, _, name = destination.partition("/")
        now = datetime.now(UTC)
        admitted = await self.store.admit_training(
            NewTraining(
                user_key=user_key,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                model_owner=owner,
                model_name=name,
                trigger_word=trigger_word,
                steps=steps,
                total_steps=steps,
                source=source,  # type: ignore[arg-type]
                cost_reserved=self.prices.estimate_training(steps),
            ),
            await self.limits_for(user_key, guild_id, now),
            self.keeper.owner,
            now,
            self.keeper.lease_until(now),
        )
        if isinstance(admitted, Refusal):
            if self.policy is not None:
                self.policy.refused(admitted)
            raise training_refusal(admitted)
        try:
            training, created_model = await self._create_on_replicate(
                admitted, zip_path, destination
            )
        except BaseException as exc:
            error = exc.user_message if isinstance(exc, UserFacingError) else "Internal error."
            await self.store.update_training(
                admitted.id,
                status="failed",
                error=error[:ERROR_TEXT],
                completed_at=datetime.now(UTC),
                notified_at=datetime.now(UTC),
                lease_owner=None,
                cost_usd=0.0,
            )
            self._ended(await self.store.get_training(admitted.id) or admitted)
            raise
        self._wake.set()
        return StartedTraining(training, report, created_model)

    async def _create_on_replicate(
        self, training: Training, zip_path: Path, destination: str
    ) -> tuple[Training, bool]:
        """Upload the zip, make sure the destination model exists, create the training;
        the training is admitted (and in the store) already."""
        owner, name = training.model_owner, training.model_name
        uploaded = await self.replicate.upload(zip_path, filename="images.zip")
        created_model = await self.replicate.ensure_model(owner, name)
        await self.store.upsert_model(
            owner,
            name,
            guild_id=training.guild_id,
            creator_key=training.user_key,
            trigger_word=training.trigger_word,
            latest_version=None,
        )
        training_input = {
            "input_images": uploaded.url,
            "trigger_word": training.trigger_word,
            "steps": training.steps,
        }
        state = await self.replicate.start_training(
            self.settings.trainer_version,
            destination,
            training_input,
            webhook=self.webhook_url,
            webhook_events=WEBHOOK_EVENTS,
        )
        status = state.status if state.status in ("starting", "processing") else "starting"
        await self.store.update_training(
            training.id,
            training_id=state.id,
            status=status,
            params={"input_images": uploaded.url},
            lease_owner=None,
        )
        stored = await self.store.get_training(training.id)
        assert stored is not None
        return stored, created_model

    async def _abandoned(self, training: Training) -> None:
        """A training whose starting process died before it reached Replicate (recorded
        failed by the store): its requester is told."""
        self._ended(training)
        await self.apply(training, _state_of(training))

    def _ended(self, training: Training) -> None:
        for hook in list(self.end_hooks):
            try:
                hook(training)
            except Exception:
                log.exception("training end hook failed for %s", training.id)

    async def get(self, local_id: str) -> Training | None:
        return await self.store.get_training(local_id)

    async def recent(
        self, *, guild_id: int | None, user_id: int | None, limit: int = 15
    ) -> list[Training]:
        """The newest trainings of a server (of one member, when ``user_id`` is given)."""
        return await self.store.recent_trainings(guild_id=guild_id, user_id=user_id, limit=limit)

    async def record_status_message(self, local_id: str, message_id: int) -> None:
        """Remember the message that shows the training's progress."""
        await self.store.update_training(local_id, status_message_id=message_id)

    @property
    def webhook_url(self) -> str | None:
        return self.settings.webhook_url

    async def cancel(self, local_id: str) -> Training:
        training = await self.store.get_training(local_id)
        if training is None or training.training_id is None:
            raise UserFacingError("This training no longer exists.")
        if training.status in FINAL:
            return training
        state = await self.replicate.cancel_training(training.training_id)
        return await self.apply(training, state)

    # -- tracking ----------------------------------------------------------------

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
                self._ended(current)
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

    def _on_notice(self, topic: str) -> None:
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
                await self.apply(training, _state_of(training))
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

    async def run_tracker(self) -> None:
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


def _state_of(training: Training) -> TrainingState:
    return TrainingState(
        id=training.training_id or "",
        status=training.status,
        step=training.step,
        total=training.total_steps,
        version=training.version,
        weights=training.weights,
        error=training.error,
        created_at=training.created_at,
        started_at=training.started_at,
        completed_at=training.completed_at,
        predict_time=None,
    )


__all__ = [
    "MODEL_NAME_RULE",
    "StartedTraining",
    "TrainingNotifier",
    "TrainingService",
    "check_names",
    "eta_seconds",
    "progress_bar",
]
