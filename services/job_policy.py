"""What a job is admitted against: the owner's limits, tightened by its server's
settings, replaced by its API key's own, and its budgets; and what it costs.

Generation admission (:mod:`services.generation.admission`) and training admission
(:mod:`services.training`) ask here for the limits, and the store checks them and uses
them up in one step.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.api_keys import ApiKeys
from services.budgets import Budgets, refusal_text
from services.costs import PriceTable
from services.guild_settings import GuildSettings
from services.settings import Settings
from services.store import NewGeneration
from services.store.jobs import GenerationLimits, Refusal
from services.store.trainings import TrainingLimits


class JobPolicy:
    def __init__(
        self,
        settings: Settings,
        guild_settings: GuildSettings,
        api_keys: ApiKeys,
        budgets: Budgets,
        prices: PriceTable,
    ) -> None:
        self.settings = settings
        self.guild_settings = guild_settings
        self.api_keys = api_keys
        self.budgets = budgets
        self.prices = prices

    async def generation_limits(self, job: NewGeneration) -> GenerationLimits:
        s = self.settings
        cooldown, per_day = s.generate_cooldown_seconds, s.generations_per_user_per_day
        config = None
        if job.guild_id is not None:
            config = await self.guild_settings.config(job.guild_id)
            cooldown, per_day = config.cooldown, config.generations_per_day
        key = await self.api_keys.for_user_key(job.user_key) if job.source == "api" else None
        if key is not None:
            cooldown = key.cooldown if key.cooldown is not None else cooldown
            per_day = key.per_day if key.per_day is not None else per_day
        return GenerationLimits(
            cooldown=cooldown,
            per_day=per_day,
            max_running=s.max_concurrent_generations,
            max_queued=s.max_queued_generations,
            budgets=self.budgets.for_job(config, key, job.created_at or datetime.now(UTC)),
        )

    async def training_limits(
        self, user_key: str, guild_id: int | None, now: datetime
    ) -> TrainingLimits:
        config = await self.guild_settings.config(guild_id) if guild_id is not None else None
        key = await self.api_keys.for_user_key(user_key)
        return TrainingLimits(
            per_day=(
                config.trainings_per_day if config else self.settings.trainings_per_user_per_day
            ),
            per_guild=self.settings.max_active_trainings_per_guild,
            budgets=self.budgets.for_job(config, key, now),
        )

    async def roles_needed(self, guild_id: int | None, role_ids: list[int]) -> list[int] | None:
        """None if a member with ``role_ids`` may train here; else the roles to ask for
        (the owner's rule and the server's both apply)."""
        owner_roles = self.settings.train_role_ids
        if owner_roles and not set(owner_roles) & set(role_ids):
            return list(owner_roles)
        if guild_id is None:
            return None
        server_roles = (await self.guild_settings.config(guild_id)).train_roles
        if server_roles and not set(server_roles) & set(role_ids):
            return list(server_roles)
        return None

    def refused(self, refusal: Refusal) -> None:
        """Admission refused a job (the budget's admins may have to hear of it)."""
        self.budgets.refused(refusal)

    @staticmethod
    def budget_text(refusal: Refusal) -> str:
        return refusal_text(refusal)
