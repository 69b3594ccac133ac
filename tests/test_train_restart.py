"""A training outlives the bot process: restarts (even SIGKILL) lose no notice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emulators.discord import DiscordEmulator, Message
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness, BotProcess, bot_env
from tests.helpers.quiet import wait_until_quiet
from tests.test_train import FAST, is_notice, is_status, started_training

pytestmark = pytest.mark.backends


def notices(discord_emu: DiscordEmulator) -> list[Message]:
    return [m for m in discord_emu.messages(discord_emu.channel) if is_notice(m)]


async def test_sigkill_mid_training_then_restart_notifies_exactly_once(
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
    database_url: str,
) -> None:
    replicate_emu.training_mode = "manual"
    env = bot_env(discord_emu, replicate_emu, tmp_path, DATABASE_URL=database_url, **FAST)
    first = BotProcess(env, cwd=tmp_path)
    await first.start()
    try:
        await discord_emu.wait_ready(timeout=15)
        alice = discord_emu.add_user("alice")
        await started_training(discord_emu, tmp_path, user=alice)
        job = replicate_emu.last_training
        await replicate_emu.advance_training(job.id, step=30)
        status = await discord_emu.wait_for_message(
            discord_emu.channel,
            lambda m: is_status(m) and "30/100" in m.embeds[0]["description"],
            timeout=10,
        )
    finally:
        await first.kill()
    assert first.proc is not None and first.proc.returncode == -9

    await replicate_emu.complete_training(job.id)
    second = BotProcess(env, cwd=tmp_path)
    await second.start()
    try:
        notice = await discord_emu.wait_for_message(discord_emu.channel, is_notice, timeout=15)
        await discord_emu.wait_for_message(
            discord_emu.channel,
            lambda m: m.id == status.id and "Done" in m.embeds[0]["description"],
            timeout=10,
        )
        await wait_until_quiet(discord_emu, replicate_emu, database_url, poll_seconds=0.05)
    finally:
        await second.kill()
    assert [u.id for u in notice.pinged_users()] == [alice.id]
    assert notices(discord_emu) == [notice]
    assert "Traceback" not in second.output


async def test_crash_between_notice_and_record_sends_no_second_notice(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    """The notice went out but the process died before recording it: the resend after
    the restart carries the same nonce, and Discord drops it."""
    await harness.start(TRAINING_POLL_SECONDS="3600", TRAINING_STATUS_EDIT_SECONDS="0")
    replicate_emu.training_mode = "manual"
    await started_training(discord_emu, tmp_path)
    job = replicate_emu.last_training
    await replicate_emu.complete_training(job.id)
    store = harness.services.store
    training = (await store.recent_trainings(guild_id=None, user_id=None))[0]
    state = await harness.services.replicate.get_training(job.id)
    await store.update_training(
        training.id, status="succeeded", version=state.version, completed_at=state.completed_at
    )
    training = await store.get_training(training.id)
    assert training is not None
    assert await harness.services.trainings.notifier.finished(training)  # sent, not recorded
    await harness.restart(TRAINING_POLL_SECONDS="0.05")
    for _ in range(3):
        unfinished = await harness.services.store.unfinished_trainings()
        if not unfinished:
            break
        await harness.services.trainings.poll_once()
    assert await harness.services.store.unfinished_trainings() == []
    await wait_until_quiet(
        discord_emu, replicate_emu, harness.env["DATABASE_URL"], poll_seconds=0.05
    )
    assert len(notices(discord_emu)) == 1
