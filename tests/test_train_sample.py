"""The sample under a training's completion notice, end to end: the real bot and the real
replicate client against both emulators."""

from __future__ import annotations

from pathlib import Path

from tests.emulators.discord import DiscordEmulator, Message
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness
from tests.helpers.store import recent_generations, wait_for_generation
from tests.test_train import FAST, is_notice, started_training


def is_sample(notice: Message):
    return lambda m: m.referenced is notice and len(m.attachments) == 1


async def finish_training(
    discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> tuple[Message, str]:
    replicate_emu.training_mode = "manual"
    await started_training(discord_emu, tmp_path)
    training = replicate_emu.last_training
    await replicate_emu.complete_training(training.id)
    notice = await discord_emu.wait_for_message(discord_emu.channel, is_notice, timeout=30)
    version = replicate_emu.trainings[training.id].output["version"].rpartition(":")[2]
    return notice, version


async def test_the_notice_carries_a_sample_of_the_new_model(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(**FAST)
    notice, version = await finish_training(discord_emu, replicate_emu, tmp_path)
    sample = await discord_emu.wait_for_message(discord_emu.channel, is_sample(notice), timeout=30)
    job = replicate_emu.last_prediction
    assert job.version == version and job.input["prompt"] == "a photo of RUFUS"
    assert not sample.pinged_users(), "the notice already pinged the requester"
    assert any((c.custom_id or "").startswith("gen:vary:") for c in sample.components)
    store = harness.services.store
    record = await wait_for_generation(
        store,
        (await recent_generations(store, limit=1))[0].id,
        lambda g: g.result_message_id == sample.id,
    )
    assert record.user_key == f"discord:{discord_emu._user(None).id}"
    notices = [m for m in discord_emu.messages(discord_emu.channel) if is_notice(m)]
    assert notices == [notice]


async def test_the_cooldown_does_not_refuse_the_sample(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(
        **FAST, GENERATE_COOLDOWN_SECONDS="600", TRAIN_SAMPLE_PROMPT="{trigger}, oil"
    )
    user = discord_emu._user(None)
    first = await discord_emu.slash("generate", options={"prompt": "x"}, user=user)
    await first.wait_original(lambda m: len(m.attachments) == 1, timeout=30)
    notice, _ = await finish_training(discord_emu, replicate_emu, tmp_path)
    await discord_emu.wait_for_message(discord_emu.channel, is_sample(notice), timeout=30)
    assert replicate_emu.last_prediction_input["prompt"] == "RUFUS, oil"
    records = await recent_generations(harness.services.store)
    assert len(records) == 2, "the sample counts as one of the requester's generations"


async def test_a_failing_sample_still_leaves_one_notice(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(**FAST)
    replicate_emu.fail_next_prediction("CUDA out of memory")
    notice, _ = await finish_training(discord_emu, replicate_emu, tmp_path)
    await replicate_emu.wait_for(lambda: replicate_emu.counts["predictions_created"] == 1)
    store = harness.services.store
    record = await wait_for_generation(
        store, (await recent_generations(store, limit=1))[0].id, lambda g: g.status == "failed"
    )
    assert "CUDA" in (record.error or "")
    messages = discord_emu.messages(discord_emu.channel)
    assert [m for m in messages if is_notice(m)] == [notice]
    assert not [m for m in messages if m.referenced is notice]
    assert "ready" in notice.content


async def test_an_empty_sample_prompt_turns_it_off(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(**FAST, TRAIN_SAMPLE_PROMPT="")
    notice, _ = await finish_training(discord_emu, replicate_emu, tmp_path)
    assert "ready" in notice.content
    later = await discord_emu.slash("generate", options={"prompt": "after the notice"})
    await later.wait_original(lambda m: len(m.attachments) == 1, timeout=30)
    assert replicate_emu.counts["predictions_created"] == 1
    assert [g.prompt for g in await recent_generations(harness.services.store)] == [
        "after the notice"
    ]
