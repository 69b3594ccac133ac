"""What a training must pass before anything costs money: the names, the roles, the
limits, the destination model, the upload's name and size, and the zip itself."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.budgets import refusal_text as budget_refusal_text
from services.errors import LimitReached, PermissionRefused, UserFacingError
from services.job_policy import JobPolicy
from services.replicate import ReplicateService
from services.settings import Settings
from services.store import Store
from services.store.jobs import Refusal
from services.store.trainings import TrainingLimits
from services.zip_gate import ZipCheckGate
from services.zipcheck import ZipLimits, ZipReport, check_zip_async

TRIGGER_WORD = re.compile(r"^[A-Za-z0-9_]{2,32}$")
MODEL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?$")
MODEL_NAME_RULE = (
    "Model names may use lowercase letters, digits, '-', '_' and '.', "
    "and must start and end with a letter or digit (at most 100 characters)."
)


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


def check_steps(steps: int) -> None:
    if not 100 <= steps <= 4000:
        raise UserFacingError("Steps must be between 100 and 4000.")


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


class TrainingChecks:
    def __init__(
        self,
        settings: Settings,
        replicate: ReplicateService,
        store: Store,
        policy: JobPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.replicate = replicate
        self.store = store
        self.policy = policy
        self._owner: str | None = settings.replicate_owner
        self.zip_checks = ZipCheckGate(settings.max_concurrent_zip_checks)

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

    def refused(self, refusal: Refusal) -> LimitReached:
        """The error for a refusal, counted by the policy."""
        if self.policy is not None:
            self.policy.refused(refusal)
        return training_refusal(refusal)

    async def check_limits(self, user_key: str, guild_id: int | None) -> None:
        """Refuse early (before a zip is downloaded) what admission would refuse now.
        Only a hint: the training is admitted later, in one step (``start``)."""
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
                raise self.refused(
                    Refusal("budget", (budget.until - now).total_seconds(), budget.limit, budget)
                )

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
