"""Generations in flight when the bot process dies are posted or reported after restart."""

from __future__ import annotations

from pathlib import Path

from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotProcess, bot_env


async def test_sigkill_with_running_and_queued_generations(
    discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    replicate_emu.prediction_mode = "manual"
    env = bot_env(discord_emu, replicate_emu, tmp_path, MAX_CONCURRENT_GENERATIONS="1")
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
            lambda m: m.webhook_id is None and len(m.attachments) == 1,
            timeout=15,
        )
        reported = await discord_emu.wait_for_message(
            discord_emu.channel,
            lambda m: m.webhook_id is None and "could not be made" in m.content,
            timeout=15,
        )
    finally:
        await second.kill()
    assert [u.id for u in posted.pinged_users()] == [alice.id]
    assert [u.id for u in reported.pinged_users()] == [bob.id]
    assert any((c.custom_id or "").startswith("gen:reroll:") for c in reported.components)
    assert replicate_emu.counts["predictions_created"] == 1
