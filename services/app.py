"""The shared resources of one process, built once and handed to every front end.

The Discord bot (``bot.py`` and ``cogs/``) and the HTTP API (``api/``) both
work through this container; nothing in it knows about Discord.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp

from services.generation import GenerationAdoption, GenerationService
from services.ownership import LeaseKeeper, ProcessIdentity
from services.replicate import ReplicateService
from services.settings import Settings
from services.store import Store, open_store
from services.training import TrainingService
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

    async def aclose(self) -> None:
        await self.replicate.aclose()
        await self.store.close()


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
    generations = GenerationService(settings, replicate, store, keeper, http=lambda: http)
    trainings = TrainingService(settings, replicate, store, keeper)
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
    )
