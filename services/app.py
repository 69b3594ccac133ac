"""The shared resources of one process, built once and handed to every front end.

The Discord bot (``bot.py`` and ``cogs/``) and the HTTP API (``api/``) both
work through this container; nothing in it knows about Discord.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp

from services import metrics
from services.api_keys import ApiKeys
from services.budgets import Budgets
from services.costs import PriceTable, load_prices
from services.generation import GenerationAdoption, GenerationService
from services.guild_settings import GuildSettings
from services.job_policy import JobPolicy
from services.ownership import LeaseKeeper, ProcessIdentity
from services.replicate import ReplicateService
from services.settings import Settings
from services.store import Generation, Store, Training, open_store
from services.training import TrainingService
from services.usage import UsageService
from services.webhook_dispatch import WebhookDispatcher

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    http: aiohttp.ClientSession
    replicate: ReplicateService
    store: Store
    keeper: LeaseKeeper
    generations: GenerationService
    adoption: GenerationAdoption
    trainings: TrainingService
    webhooks: WebhookDispatcher
    guild_settings: GuildSettings
    api_keys: ApiKeys
    prices: PriceTable
    budgets: Budgets
    usage: UsageService

    async def aclose(self) -> None:
        self.guild_settings.close()
        await self.replicate.aclose()
        await self.store.close()
        metrics.process_exiting()


async def build_services(
    settings: Settings, http: aiohttp.ClientSession, *, with_discord: bool = True
) -> Services:
    """Open the store and build the services. ``with_discord``: this process runs the
    Discord bot, so it can finish Discord jobs that it takes over (an HTTP-only process
    leaves them to one that can)."""
    store = await open_store(settings.database_url)
    try:
        replicate = ReplicateService(
            settings.replicate_api_token.get_secret_value(),
            base_url=settings.replicate_base_url,
            max_output_bytes=settings.max_output_mb * 1024 * 1024,
            outage_limit=settings.replicate_outage_seconds,
            http=http,
        )
    except BaseException:
        await store.close()
        raise
    if settings.instance_id is not None:
        log.warning(
            "INSTANCE_ID is no longer used and can be removed: each process owns its jobs "
            "through leases in the store (see JOB_LEASE_SECONDS)"
        )
    keeper = LeaseKeeper(
        store,
        ProcessIdentity.current(),
        lease_seconds=settings.job_lease_seconds,
        role="bot" if with_discord else "http",
        sources=("discord", "api") if with_discord else ("api",),
    )
    guild_settings = GuildSettings(settings, store)
    api_keys = ApiKeys(settings.api_token, store)
    prices = load_prices(settings.prices_file)
    budgets = Budgets(store, guild_settings)
    policy = JobPolicy(settings, guild_settings, api_keys, budgets, prices)
    generations = GenerationService(settings, replicate, store, keeper, policy, http=lambda: http)
    trainings = TrainingService(settings, replicate, store, keeper, policy)
    _count_job_ends(store, trainings, budgets)
    return Services(
        settings=settings,
        http=http,
        replicate=replicate,
        store=store,
        keeper=keeper,
        generations=generations,
        adoption=GenerationAdoption(generations, keeper),
        trainings=trainings,
        webhooks=WebhookDispatcher(replicate, store, trainings),
        guild_settings=guild_settings,
        api_keys=api_keys,
        prices=prices,
        budgets=budgets,
        usage=UsageService(store, guild_settings, budgets),
    )


def _count_job_ends(store: Store, trainings: TrainingService, budgets: Budgets) -> None:
    """Every job that ends is counted (metrics) and may have used its server's budget up."""

    def generation_ended(job: Generation) -> None:
        metrics.generation_ended(job)
        budgets.job_ended(job.guild_id, job.cost_usd)

    def training_ended(training: Training) -> None:
        metrics.training_ended(training)
        budgets.job_ended(training.guild_id, training.cost_usd)

    store.on_generation_end(generation_ended)
    trainings.end_hooks.append(training_ended)
