"""Generations in flight when the bot process dies are posted or reported after restart."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from services.replicate import ReplicateService
from services.store import NewGeneration, open_store
from tests.emulators.discord import DiscordEmulator, Message
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness, BotProcess, bot_env

pytestmark = pytest.mark.backends

SCHNELL = "black-forest-labs/flux-schnell"


async def posted_and_reported(discord_emu: DiscordEmulator) -> tuple[Message, Message]:
    """The channel messages of a recovery: images posted, and a job reported failed."""
    posted = await discord_emu.wait_for_message(
        discord_emu.channel,
        lambda m: m.webhook_id is None and len(m.attachments) == 1,
        timeout=15,
    )
    reported = await discord_emu.wait_for_message(
        discord_emu.channel,
        lambda m: m.webhook_id is None and "could not be made" in m.content,
        timeout=15,
    )
    return posted, reported


async def test_sigkill_with_running_and_queued_generations(
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
    database_url: str,
) -> None:
    """Killed with one job running and one queued: after the restart the running job's
    images are posted, and the queued job runs and is posted too, each pinging its
    requester."""
    replicate_emu.prediction_mode = "manual"
    env = bot_env(
        discord_emu,
        replicate_emu,
        tmp_path,
        DATABASE_URL=database_url,
        MAX_CONCURRENT_GENERATIONS="1",
    )
    alice, bob = discord_emu.add_user("alice"), discord_emu.add_user("bob")
    first = BotProcess(env, cwd=tmp_path)
    await first.start()
    try:
        await discord_emu.wait_ready(timeout=15)
        running = await discord_emu.slash("generate", options={"prompt": "a"}, user=alice)
        await running.wait_original(lambda m: "Generating" in m.content, timeout=10)
        queued = await discord_emu.slash("generate", options={"prompt": "b"}, user=bob)
        await queued.wait_original(lambda m: "position 1" in m.content, timeout=10)
        prediction = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
    finally:
        await first.kill()

    await replicate_emu.complete_prediction(prediction.id)
    second = BotProcess(env, cwd=tmp_path)
    await second.start()
    try:
        posted = await discord_emu.wait_for_message(
            discord_emu.channel,
            lambda m: m.webhook_id is None and alice.id in m.pinged_user_ids(),
            timeout=15,
        )
        later = await replicate_emu.wait_for(
            lambda: next(
                (p for p in replicate_emu.predictions.values() if p.input.get("prompt") == "b"),
                None,
            ),
            timeout=15,
        )
        await replicate_emu.complete_prediction(later.id)
        posted_later = await discord_emu.wait_for_message(
            discord_emu.channel,
            lambda m: m.webhook_id is None and bob.id in m.pinged_user_ids(),
            timeout=15,
        )
    finally:
        await second.kill()
    assert [u.id for u in posted.pinged_users()] == [alice.id] and len(posted.attachments) == 1
    assert [u.id for u in posted_later.pinged_users()] == [bob.id]
    assert len(posted_later.attachments) == 1
    assert replicate_emu.counts["predictions_created"] == 2


async def test_two_lost_creates_alike_never_share_one_prediction(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """The previous process died with two running jobs of the same prompt and seed whose
    creates were sent but whose ids were never stored, and only one prediction exists:
    after the restart one job gets its images, the other is reported as failed; the
    prediction is not posted twice."""
    carol, dave = discord_emu.add_user("carol"), discord_emu.add_user("dave")
    params = {"seed": 99, "count": 1, "aspect_ratio": "1:1"}
    store = await open_store(harness.env["DATABASE_URL"])
    try:
        for user in (carol, dave):
            lost = await store.create_generation(
                NewGeneration(
                    user_key=f"discord:{user.id}",
                    user_id=user.id,
                    guild_id=discord_emu.guild.id,
                    channel_id=discord_emu.channel.id,
                    prompt="a lighthouse",
                    model=SCHNELL,
                    params=params,
                )
            )
            await store.update_generation(lost.id, status="running", started_at=lost.created_at)
    finally:
        await store.close()
    replicate_emu.prediction_mode = "manual"
    async with ReplicateService(replicate_emu.token, base_url=replicate_emu.base_url) as rs:
        create = asyncio.create_task(rs.generate(SCHNELL, "a lighthouse", {"seed": 99}))
        job = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
        create.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await create
    await replicate_emu.complete_prediction(job.id)

    await harness.start()
    posted, reported = await posted_and_reported(discord_emu)
    pinged = {posted.pinged_users()[0].id, reported.pinged_users()[0].id}
    assert pinged == {carol.id, dave.id}
    assert replicate_emu.counts["predictions_created"] == 1
