"""The shared resources of one process, built once and handed to every front end.

The Discord bot (``bot.py`` and ``cogs/``) and the HTTP API (``api/``) both
work through this container; nothing in it knows about Discord.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp

from services.generation import GenerationService
from services.generation_recovery import GenerationRecovery
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
    generations: GenerationService
    recovery: GenerationRecovery
    trainings: TrainingService
    webhooks: WebhookDispatcher

    async def aclose(self) -> None:
        await self.replicate.aclose()
        await self.store.close()


async def build_services(settings: Settings, http: aiohttp.ClientSession) -> Services:
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
    generations = GenerationService(settings, replicate, store)
    trainings = TrainingService(settings, replicate, store)
    return Services(
        settings=settings,
        http=http,
        replicate=replicate,
        store=store,
        generations=generations,
        recovery=GenerationRecovery(generations),
        trainings=trainings,
        webhooks=WebhookDispatcher(replicate, store, trainings),
    )
