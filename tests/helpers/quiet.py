"""Waiting until nothing more can happen, before counting what happened "exactly once".

Counting notices as soon as the first one shows up proves little: a second one could be
on its way (a webhook redelivery, a poll that read the training before it was marked
notified). :func:`wait_until_quiet` waits for the system to settle first: no webhook
delivery queued or being attempted, every finished training recorded as notified in the
store, no request to Discord in flight; then one more poll interval, and the same again.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.store import normalize_database_url
from services.store.schema import trainings_table
from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import ReplicateEmulator

FINAL = ("succeeded", "failed", "canceled")


async def unnotified_trainings(engine: AsyncEngine) -> int:
    """Finished trainings whose notice is not recorded as sent."""
    t = trainings_table
    query = (
        sa.select(sa.func.count())
        .select_from(t)
        .where(t.c.status.in_(FINAL), t.c.notified_at.is_(None))
    )
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def wait_until_quiet(
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    database_url: str,
    *,
    poll_seconds: float,
    timeout: float = 30.0,  # noqa: ASYNC109 (the test API takes timeouts)
) -> None:
    """Wait until the bot (in this process or another, on ``database_url``) is quiet,
    then one more ``poll_seconds``, and until it is still quiet after that."""
    engine = create_async_engine(normalize_database_url(database_url))

    def idle() -> bool:
        return replicate_emu.webhooks_pending() == 0 and discord_emu._inflight == 0

    try:
        async with asyncio.timeout(timeout):
            while True:
                await replicate_emu.wait_for(
                    lambda: replicate_emu.webhooks_pending() == 0, timeout=timeout
                )
                await discord_emu.wait_until(lambda: discord_emu._inflight == 0, timeout=timeout)
                notified = not await unnotified_trainings(engine)
                # One more poll interval (at least a little while) before counting.
                await asyncio.sleep(max(poll_seconds, 0.05))
                if notified and idle() and not await unnotified_trainings(engine):
                    return
    finally:
        await engine.dispose()
