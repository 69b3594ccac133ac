"""Starting a training: every check again, admission in one step in the store, and only
then what costs money (the upload, the destination model, the training on Replicate).

The training is in the store from the moment it is admitted, before it exists on
Replicate: one whose start fails is recorded failed here, one whose process dies on the
way is recorded failed by the store and its requester told (``TrainingTracker.abandoned``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.costs import PriceTable
from services.errors import UserFacingError
from services.ownership import LeaseKeeper
from services.replicate import ReplicateService
from services.settings import Settings
from services.store import NewTraining, Store, Training
from services.store.jobs import Refusal
from services.training.checks import TrainingChecks, check_names, check_steps
from services.training.states import ERROR_TEXT
from services.training.tracker import TrainingTracker
from services.zipcheck import ZipReport

WEBHOOK_EVENTS = ("start", "logs", "completed")


@dataclass(frozen=True)
class StartedTraining:
    training: Training
    report: ZipReport
    created_model: bool


class TrainingStarter:
    def __init__(
        self,
        settings: Settings,
        replicate: ReplicateService,
        store: Store,
        keeper: LeaseKeeper,
        prices: PriceTable,
        checks: TrainingChecks,
        tracker: TrainingTracker,
    ) -> None:
        self.settings = settings
        self.replicate = replicate
        self.store = store
        self.keeper = keeper
        self.prices = prices
        self.checks = checks
        self.tracker = tracker

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
        checks = self.checks
        check_names(trigger_word, model_name)
        check_steps(steps)
        await checks.check_limits(user_key, guild_id)
        destination = await checks.check_destination(model_name, user_key)
        report = await checks.check_zip(zip_path, declared_size, on_wait)
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
            await checks.limits_for(user_key, guild_id, now),
            self.keeper.owner,
            now,
            self.keeper.lease_until(now),
        )
        if isinstance(admitted, Refusal):
            raise checks.refused(admitted)
        try:
            training, created_model = await self._create_on_replicate(
                admitted, zip_path, destination
            )
        except BaseException as exc:
            await self._failed(admitted, exc)
            raise
        self.tracker.wake()
        return StartedTraining(training, report, created_model)

    async def _failed(self, admitted: Training, exc: BaseException) -> None:
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
        self.tracker.ended(await self.store.get_training(admitted.id) or admitted)

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
            webhook=self.settings.webhook_url,
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
