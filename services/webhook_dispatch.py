"""Replicate's webhook deliveries: verify, record, route, and forget old ones.

A delivery is verified (:mod:`services.webhooks`) before anything else. One that ends a
prediction this process follows goes to the Replicate service (its repeats are
harmless); any other is recorded under its ``webhook-id``, so that a redelivery changes
nothing, and applied to its training. Recorded ids are kept for longer than Replicate
goes on redelivering, then pruned.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from services import metrics
from services.replicate import ReplicateService
from services.store import Store
from services.store.jobs import prediction_topic
from services.training import TrainingService
from services.webhooks import WebhookVerificationError, verify_webhook

log = logging.getLogger(__name__)

#: How long a webhook id is remembered: well past Replicate's redelivery window.
WEBHOOK_ID_RETENTION = timedelta(hours=24)
#: How often ids older than that are pruned.
PRUNE_INTERVAL = 3600.0


class WebhookDispatcher:
    def __init__(
        self, replicate: ReplicateService, store: Store, trainings: TrainingService
    ) -> None:
        self.replicate = replicate
        self.store = store
        self.trainings = trainings

    async def handle(self, headers: Mapping[str, str], body: bytes) -> str:
        """Verify and apply one delivery: a training's, or the end of a prediction this
        process follows. Returns ``applied``, ``duplicate``, ``unknown`` or ``ignored``.

        Raises WebhookVerificationError for a delivery that is not authentic or not
        fresh, and ReplicateServiceError when the signing secret cannot be fetched."""
        try:
            result = await self._handle(headers, body)
        except WebhookVerificationError:
            metrics.webhook_delivered("rejected")
            raise
        except Exception:
            metrics.webhook_delivered("error")
            raise
        metrics.webhook_delivered(result)
        return result

    async def _handle(self, headers: Mapping[str, str], body: bytes) -> str:
        secret = await self.replicate.webhook_secret()
        verify_webhook(headers, body, secret)
        try:
            payload = json.loads(body)
            object_id = payload["id"]
        except (ValueError, KeyError, TypeError):
            return "ignored"
        if self.replicate.offer_prediction(payload):
            return "applied"  # repeats are harmless: a finished prediction is no longer followed
        webhook_id = headers.get("webhook-id", "")
        result = await self.trainings.apply_webhook(
            str(object_id), webhook_id, lambda: self.replicate.training_state_from_payload(payload)
        )
        if result == "unknown":
            self.replicate.keep_early_delivery(payload)
            # It may end a prediction another process follows: tell it to look now.
            self.store.events.publish(prediction_topic(str(object_id)))
        return result

    async def prune(self, now: datetime | None = None) -> int:
        """Forget the ids of deliveries older than :data:`WEBHOOK_ID_RETENTION`."""
        before = (now or datetime.now(UTC)) - WEBHOOK_ID_RETENTION
        return await self.store.prune_webhooks(before)

    async def run_pruner(self, interval: float = PRUNE_INTERVAL) -> None:
        """Prune at once, then every ``interval`` seconds, for as long as the process runs."""
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("forgot %d old webhook ids", pruned)
            except Exception:
                log.exception("pruning old webhook ids failed")
            await asyncio.sleep(interval)
