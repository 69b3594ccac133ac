"""Webhook ids already processed, so that a redelivered webhook is handled once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from services.store.base import Queries
from services.store.columns import require_aware
from services.store.engine import shielded
from services.store.schema import webhooks_table as _webhook_t


def webhook_insert(insert: Any) -> Any:
    """Record a webhook id (bound as ``webhook_id``, ``received_at``) unless recorded
    before; ``insert`` is the dialect's insert of the webhooks table."""
    return insert.values(
        webhook_id=sa.bindparam("webhook_id"), received_at=sa.bindparam("received_at")
    ).on_conflict_do_nothing(index_elements=[_webhook_t.c.webhook_id])


class WebhookQueries(Queries):
    @shielded
    async def record_webhook(self, webhook_id: str, received_at: datetime) -> bool:
        """Remember a webhook-id. False if it was recorded before (a redelivery)."""
        require_aware(received_at=received_at)
        stmt = webhook_insert(self._db.insert(_webhook_t))
        params = {"webhook_id": webhook_id, "received_at": received_at}
        recorded: bool = await self._db.transact(
            lambda conn: conn.execute(stmt, params).rowcount == 1
        )
        return recorded

    @shielded
    async def prune_webhooks(self, before: datetime) -> int:
        """Forget webhook-ids received before ``before``; returns how many were deleted.

        Run periodically by the bot, with ``before`` older than any redelivery Replicate
        still makes, so the table stays small. Finds the rows through an index on
        ``received_at``."""
        require_aware(before=before)
        async with self._db.tx(write=True) as conn:
            result = await conn.execute(
                sa.delete(_webhook_t).where(_webhook_t.c.received_at < before)
            )
            return result.rowcount
