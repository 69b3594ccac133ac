"""The one object the front ends use for trainings; the work is in the modules beside it:
:mod:`~services.training.checks` (what a training must pass), :mod:`~services.training.starter`
(admission and the start on Replicate) and :mod:`~services.training.tracker` (following it
to its end, the status message and the final notice)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from services.costs import load_prices
from services.errors import UserFacingError
from services.job_policy import JobPolicy
from services.ownership import LeaseKeeper
from services.replicate import ReplicateService, TrainingState
from services.settings import Settings
from services.store import Store, Training
from services.store.trainings import TrainingLimits
from services.training.checks import TrainingChecks
from services.training.starter import TrainingStarter
from services.training.states import FINAL
from services.training.tracker import TrainingNotifier, TrainingTracker
from services.zip_gate import ZipCheckGate
from services.zipcheck import ZipLimits, ZipReport


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
        self.checks = TrainingChecks(settings, replicate, store, policy)
        self.tracker = TrainingTracker(settings, replicate, store, self.prices)
        self.starter = TrainingStarter(
            settings, replicate, store, keeper, self.prices, self.checks, self.tracker
        )
        #: Check everything, then upload and create the training (:meth:`TrainingStarter.start`).
        self.start = self.starter.start
        keeper.on_abandoned_training(self.tracker.abandoned)
        store.events.subscribe(self.tracker.on_notice)

    @property
    def end_hooks(self) -> list[Callable[[Training], None]]:
        """Called with each training that ends, once (metrics, budgets)."""
        return self.tracker.end_hooks

    @property
    def notifier(self) -> TrainingNotifier | None:
        """The front end that shows trainings (lent by the Discord cog while it is loaded)."""
        return self.tracker.notifier

    @notifier.setter
    def notifier(self, notifier: TrainingNotifier | None) -> None:
        self.tracker.notifier = notifier

    @property
    def webhook_url(self) -> str | None:
        return self.settings.webhook_url

    # -- checks ------------------------------------------------------------------

    @property
    def zip_checks(self) -> ZipCheckGate:
        return self.checks.zip_checks

    @property
    def zip_limits(self) -> ZipLimits:
        return self.checks.zip_limits

    @property
    def limits(self) -> TrainingLimits:
        """The owner's limits."""
        return self.checks.limits

    def role_allowed(self, role_ids: list[int]) -> bool:
        return self.checks.role_allowed(role_ids)

    async def roles_needed(self, guild_id: int | None, role_ids: list[int]) -> list[int] | None:
        return await self.checks.roles_needed(guild_id, role_ids)

    async def owner(self) -> str:
        return await self.checks.owner()

    async def limits_for(
        self, user_key: str, guild_id: int | None, now: datetime
    ) -> TrainingLimits:
        return await self.checks.limits_for(user_key, guild_id, now)

    async def check_limits(self, user_key: str, guild_id: int | None) -> None:
        await self.checks.check_limits(user_key, guild_id)

    async def check_destination(self, model_name: str, user_key: str) -> str:
        return await self.checks.check_destination(model_name, user_key)

    def check_upload(self, file_name: str, size: int) -> None:
        self.checks.check_upload(file_name, size)

    async def check_zip(
        self,
        path: Path,
        declared_size: int | None = None,
        on_wait: Callable[[int], Awaitable[None]] | None = None,
    ) -> ZipReport:
        return await self.checks.check_zip(path, declared_size, on_wait)

    # -- jobs --------------------------------------------------------------------

    async def get(self, local_id: str) -> Training | None:
        return await self.store.get_training(local_id)

    async def recent(
        self, *, guild_id: int | None, user_id: int | None, limit: int = 15
    ) -> list[Training]:
        """The newest trainings of a server (of one member, when ``user_id`` is given)."""
        return await self.store.recent_trainings(guild_id=guild_id, user_id=user_id, limit=limit)

    async def record_status_message(self, local_id: str, message_id: int) -> None:
        """Remember the message that shows the training's progress."""
        await self.tracker.record_status_message(local_id, message_id)

    async def cancel(self, local_id: str) -> Training:
        training = await self.store.get_training(local_id)
        if training is None or training.training_id is None:
            raise UserFacingError("This training no longer exists.")
        if training.status in FINAL:
            return training
        state = await self.replicate.cancel_training(training.training_id)
        return await self.tracker.apply(training, state)

    # -- tracking ----------------------------------------------------------------

    def lock(self, local_id: str) -> asyncio.Lock:
        return self.tracker.lock(local_id)

    async def apply(
        self, training: Training, state: TrainingState, *, webhook: bool = False
    ) -> Training:
        """See :meth:`TrainingTracker.apply`."""
        return await self.tracker.apply(training, state, webhook=webhook)

    async def apply_webhook(
        self, training_id: str, webhook_id: str, state: Callable[[], TrainingState]
    ) -> str:
        """See :meth:`TrainingTracker.apply_webhook`."""
        return await self.tracker.apply_webhook(training_id, webhook_id, state)

    async def refresh(self, local_id: str) -> None:
        await self.tracker.refresh(local_id)

    async def poll_once(self) -> int:
        return await self.tracker.poll_once()

    async def run_tracker(self) -> None:
        await self.tracker.run()
