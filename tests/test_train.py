"""/train end to end: the real bot and the real replicate client against both emulators."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.emulators.discord import Channel, DiscordEmulator, InteractionHandle, Message, User
from tests.emulators.replicate import Job, ReplicateEmulator
from tests.harness import BotHarness
from tests.helpers import zips
from tests.helpers.ports import free_port
from tests.helpers.quiet import wait_until_quiet

FAST = {"TRAINING_POLL_SECONDS": "0.05", "TRAINING_STATUS_EDIT_SECONDS": "0"}


def training_zip(tmp_path: Path, n: int = 3, **kwargs: object) -> tuple[str, bytes]:
    path = zips.valid_training_zip(tmp_path / "photos.zip", n=n, **kwargs)  # type: ignore[arg-type]
    return "photos.zip", path.read_bytes()


def nothing_created(replicate_emu: ReplicateEmulator) -> bool:
    counts = replicate_emu.counts
    return counts["files_created"] == counts["models_created"] == counts["trainings_created"] == 0


def is_status(message: Message) -> bool:
    return bool(message.embeds) and message.embeds[0].get("title", "").startswith("Training ")


def is_notice(message: Message) -> bool:
    return message.webhook_id is None and not message.embeds and "<@" in message.content


async def start_training(
    discord_emu: DiscordEmulator,
    tmp_path: Path,
    *,
    user: User | None = None,
    channel: Channel | None = None,
    model_name: str = "my-dog",
    trigger_word: str = "RUFUS",
    steps: int = 100,
) -> InteractionHandle:
    handle = await discord_emu.slash(
        "train",
        user=user,
        channel=channel,
        options={"trigger_word": trigger_word, "model_name": model_name, "steps": steps},
        attachments={"images": training_zip(tmp_path)},
    )
    callback = await handle.first_response(timeout=3)
    assert callback.type == 5 and callback.data["flags"] & 64, "must defer, privately"
    return handle


async def started_training(
    discord_emu: DiscordEmulator, tmp_path: Path, **kwargs: Any
) -> InteractionHandle:
    """``start_training``, then wait for the private "started" reply."""
    handle = await start_training(discord_emu, tmp_path, **kwargs)
    await handle.wait_original(lambda m: "started" in m.content, timeout=15)
    return handle


async def start_in_webhook_mode(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> tuple[InteractionHandle, Job]:
    """The bot with PUBLIC_URL set (no polling to speak of) and one training running."""
    port = free_port()
    await harness.start(
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        HTTP_PORT=str(port),
        TRAINING_POLL_SECONDS="3600",
        TRAINING_STATUS_EDIT_SECONDS="0",
    )
    replicate_emu.training_mode = "manual"
    handle = await started_training(discord_emu, tmp_path)
    job = replicate_emu.last_training
    assert job.webhook == f"http://127.0.0.1:{port}/webhooks/replicate"
    return handle, job


async def test_happy_path_progress_and_completion_ping(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(**FAST)
    replicate_emu.training_mode = "manual"
    alice = discord_emu.add_user("alice")
    handle = await start_training(discord_emu, tmp_path, user=alice)
    reply = await handle.wait_original(lambda m: "started" in m.content, timeout=10)
    assert "3 images" in reply.content
    training = replicate_emu.last_training
    assert training.input["trigger_word"] == "RUFUS"
    assert training.input["steps"] == 100
    assert training.destination == f"{replicate_emu.username}/my-dog"
    assert replicate_emu.models[f"{replicate_emu.username}/my-dog"].visibility == "private"
    status = await discord_emu.wait_for_message(discord_emu.channel, is_status, timeout=5)
    assert any((c.custom_id or "").startswith("train:cancel:") for c in status.components)

    await replicate_emu.advance_training(training.id, step=40)
    await discord_emu.wait_for_message(
        discord_emu.channel, lambda m: is_status(m) and "40/100" in m.embeds[0]["description"]
    )
    assert "▰" in status.embeds[0]["description"]
    await replicate_emu.complete_training(training.id)
    notice = await discord_emu.wait_for_message(discord_emu.channel, is_notice, timeout=5)
    assert [u.id for u in notice.pinged_users()] == [alice.id]
    assert not notice.pinged_everyone()
    version = replicate_emu.trainings[training.id].output["version"].rpartition(":")[2]
    assert f"{replicate_emu.username}/my-dog" in notice.content
    assert version in notice.content and "RUFUS" in notice.content
    assert any((c.custom_id or "").startswith("train:use:") for c in notice.components)
    await discord_emu.wait_for_message(
        discord_emu.channel, lambda m: is_status(m) and "Done" in m.embeds[0]["description"]
    )
    # The sample of the new model, right under the notice (tests/test_train_sample.py).
    await discord_emu.wait_for_message(
        discord_emu.channel, lambda m: m.referenced is notice and m.attachments, timeout=10
    )
    await wait_until_quiet(
        discord_emu, replicate_emu, harness.env["DATABASE_URL"], poll_seconds=0.05
    )
    assert [m for m in discord_emu.messages(discord_emu.channel) if is_notice(m)] == [notice]
    # Generating with the finished model: button -> modal -> images, trigger word kept.
    press = await discord_emu.press(notice, notice.components[0].custom_id or "", user=alice)
    opened = await press.first_response()
    assert opened.type == 9
    submit = await discord_emu.submit_modal(press, {"prompt": "a dog surfing"}, user=alice)
    result = await submit.wait_original(lambda m: len(m.attachments) == 1, timeout=10)
    assert replicate_emu.last_prediction_input["prompt"] == "RUFUS a dog surfing"
    assert replicate_emu.last_prediction.version == version
    assert "RUFUS" in json.dumps(result.embeds)
    choices = await discord_emu.autocomplete("generate", "model", "my-dog", user=alice)
    assert f"{replicate_emu.username}/my-dog" in [c["value"] for c in choices]
    stored = (await harness.services.store.recent_trainings(guild_id=None, user_id=None))[0]
    assert stored.status == "succeeded" and stored.notified_at is not None
    assert stored.status_message_id == status.id


BAD_ZIPS = {
    "not a zip": ([zips.Entry("x")], "not a zip"),
    "traversal": ([zips.traversal_entry()], "leave the archive"),
    "symlink": ([zips.symlink_entry()], "link"),
    "encrypted": ([zips.encrypted_entry()], "password"),
    "nested": ([zips.nested_zip_entry()], "archive"),
    "bomb": ([zips.bomb_entry(size=200 * 1024 * 1024)], "compress"),
    "no images": ([zips.caption_entry("only.txt")], "image"),
    "fake image": ([zips.fake_gif_as_png()], "fake.png"),
}


@pytest.mark.parametrize("kind", list(BAD_ZIPS))
async def test_bad_zip_is_refused_before_anything_is_created(
    running: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
    kind: str,
) -> None:
    entries, expected = BAD_ZIPS[kind]
    data = b"this is not a zip at all" if kind == "not a zip" else zips.zip_bytes(entries)
    handle = await discord_emu.slash(
        "train",
        options={"trigger_word": "TOK", "model_name": "bad-zip"},
        attachments={"images": ("photos.zip", data)},
    )
    message = await handle.wait_original(lambda m: m.content.startswith("❌"), timeout=10)
    assert expected.lower() in message.content.lower(), message.content
    assert message.ephemeral
    assert nothing_created(replicate_emu)


async def test_invalid_names_are_refused_with_the_rule(
    running: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    handle = await discord_emu.slash(
        "train",
        options={"trigger_word": "TOK", "model_name": "My_Model-"},
        attachments={"images": training_zip(tmp_path)},
    )
    callback = await handle.first_response()
    assert "lowercase letters" in callback.data["content"] and callback.data["flags"] & 64
    handle = await discord_emu.slash(
        "train",
        options={"trigger_word": "no spaces", "model_name": "ok"},
        attachments={"images": training_zip(tmp_path)},
    )
    callback = await handle.first_response()
    assert "Trigger word" in callback.data["content"]
    assert nothing_created(replicate_emu)


async def test_an_attachment_that_cannot_be_a_training_zip_is_refused_before_download(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(MAX_TRAIN_ZIP_MB="1")
    refusals = []
    for name, data in (("photos.tar", b"x" * 100), ("photos.zip", b"x" * (1024 * 1024 + 1))):
        handle = await discord_emu.slash(
            "train",
            options={"trigger_word": "TOK", "model_name": "ok"},
            attachments={"images": (name, data)},
        )
        callback = await handle.first_response()
        assert callback.data["flags"] & 64
        refusals.append(callback.data["content"])
    assert "`photos.tar` is not a .zip file" in refusals[0]
    assert "the limit is 1 MB" in refusals[1]
    assert nothing_created(replicate_emu)


async def test_role_gate(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    trainers = discord_emu.add_role("trainers")
    await harness.start(TRAIN_ROLE_IDS=str(trainers.id), **FAST)
    outsider = discord_emu.add_user("outsider")
    member = discord_emu.add_user("member", roles=[trainers])
    handle = await discord_emu.slash(
        "train",
        user=outsider,
        options={"trigger_word": "TOK", "model_name": "gate"},
        attachments={"images": training_zip(tmp_path)},
    )
    callback = await handle.first_response()
    assert "reserved" in callback.data["content"] and callback.data["flags"] & 64
    assert nothing_created(replicate_emu)
    handle = await started_training(discord_emu, tmp_path, user=member, model_name="gate")


async def test_daily_quota(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(TRAININGS_PER_USER_PER_DAY="1", **FAST)
    replicate_emu.training_mode = "manual"
    handle = await started_training(discord_emu, tmp_path, model_name="first")
    handle = await discord_emu.slash(
        "train",
        options={"trigger_word": "TOK", "model_name": "second"},
        attachments={"images": training_zip(tmp_path)},
    )
    callback = await handle.first_response()
    assert "for today" in callback.data["content"]
    assert replicate_emu.counts["trainings_created"] == 1


async def test_retraining_someone_elses_model_is_refused(
    running: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    alice, bob = discord_emu.add_user("alice"), discord_emu.add_user("bob")
    handle = await started_training(discord_emu, tmp_path, user=alice, model_name="shared")
    handle = await discord_emu.slash(
        "train",
        user=bob,
        options={"trigger_word": "TOK", "model_name": "shared"},
        attachments={"images": training_zip(tmp_path)},
    )
    message = await handle.wait_original(lambda m: m.content.startswith("❌"), timeout=10)
    assert "belongs to someone else" in message.content
    assert replicate_emu.counts["trainings_created"] == 1


async def test_cancel_by_requester_only(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(**FAST)
    replicate_emu.training_mode = "manual"
    alice, bob = discord_emu.add_user("alice"), discord_emu.add_user("bob")
    await started_training(discord_emu, tmp_path, user=alice)
    status = await discord_emu.wait_for_message(discord_emu.channel, is_status)
    cancel_id = status.components[0].custom_id or ""
    refused = await discord_emu.press(status, cancel_id, user=bob)
    assert "Only the person" in (await refused.first_response()).data["content"]
    press = await discord_emu.press(status, cancel_id, user=alice)
    await press.wait_followup(lambda m: "canceled" in m.content.lower(), timeout=5)
    assert replicate_emu.last_training.status == "canceled"
    notice = await discord_emu.wait_for_message(discord_emu.channel, is_notice, timeout=5)
    assert "canceled" in notice.content and [u.id for u in notice.pinged_users()] == [alice.id]


async def test_failed_training_gets_reason_and_ping(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(**FAST)
    replicate_emu.training_mode = "manual"
    handle = await started_training(discord_emu, tmp_path)
    await replicate_emu.fail_training(replicate_emu.last_training.id, "CUDA out of memory")
    notice = await discord_emu.wait_for_message(discord_emu.channel, is_notice, timeout=5)
    assert "failed" in notice.content and "CUDA out of memory" in notice.content
    assert [u.id for u in notice.pinged_users()] == [handle.user.id]


async def test_two_trainings_in_two_channels(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(**FAST)
    replicate_emu.training_mode = "manual"
    other = discord_emu.add_channel("other")
    alice, bob = discord_emu.add_user("alice"), discord_emu.add_user("bob")
    first = await start_training(discord_emu, tmp_path, user=alice, model_name="one")
    second = await start_training(discord_emu, tmp_path, user=bob, channel=other, model_name="two")
    await first.wait_original(lambda m: "started" in m.content, timeout=10)
    await second.wait_original(lambda m: "started" in m.content, timeout=10)
    for job in list(replicate_emu.trainings.values()):
        await replicate_emu.complete_training(job.id)
    one = await discord_emu.wait_for_message(discord_emu.channel, is_notice, timeout=5)
    two = await discord_emu.wait_for_message(other, is_notice, timeout=5)
    assert "/one" in one.content and [u.id for u in one.pinged_users()] == [alice.id]
    assert "/two" in two.content and [u.id for u in two.pinged_users()] == [bob.id]


async def test_trainings_lists_recent_jobs(
    running: BotHarness, discord_emu: DiscordEmulator, tmp_path: Path
) -> None:
    handle = await started_training(discord_emu, tmp_path)
    listing = await discord_emu.slash("trainings", user=handle.user)
    callback = await listing.first_response()
    assert "my-dog" in callback.data["content"] and callback.data["flags"] & 64


async def test_webhooks_drive_progress_and_redeliveries_change_nothing(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    """Signed deliveries alone bring progress and the notice; a repeated delivery (same
    or new webhook-id) sends no second notice. Forged ones: tests/test_reliability.py."""
    _handle, job = await start_in_webhook_mode(harness, discord_emu, replicate_emu, tmp_path)
    url = job.webhook or ""
    await replicate_emu.advance_training(job.id, step=50)
    await discord_emu.wait_for_message(
        discord_emu.channel, lambda m: is_status(m) and "50/100" in m.embeds[0]["description"]
    )
    await replicate_emu.complete_training(job.id)
    notice = await discord_emu.wait_for_message(discord_emu.channel, is_notice, timeout=5)
    await replicate_emu.wait_for(
        lambda: any(
            "completed" in d.events and d.status == 200 for d in replicate_emu.webhook_deliveries
        )
    )

    final = json.dumps(replicate_emu.trainings[job.id].to_json(replicate_emu.base_url)).encode()
    async with aiohttp.ClientSession() as http:
        headers = replicate_emu.sign(final, msg_id="msg_repeat")
        for _ in range(2):
            async with http.post(url, data=final, headers=headers) as response:
                assert response.status == 200
        async with http.post(url, data=final, headers=replicate_emu.sign(final)) as response:
            assert response.status == 200
    await wait_until_quiet(discord_emu, replicate_emu, harness.env["DATABASE_URL"], poll_seconds=0)
    notices = [m for m in discord_emu.messages(discord_emu.channel) if is_notice(m)]
    assert notices == [notice], "a repeated delivery sent a second notice"
    assert replicate_emu.request_count("GET", r"/v1/trainings/.+") <= 1


async def test_zips_past_the_bound_wait_their_turn_and_are_told(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(MAX_CONCURRENT_ZIP_CHECKS="1", **FAST)
    gate = harness.services.trainings.zip_checks
    held, release = asyncio.Event(), asyncio.Event()

    async def another_check() -> None:
        async with gate.turn():
            held.set()
            await release.wait()

    holder = asyncio.create_task(another_check())
    await held.wait()
    handle = await start_training(discord_emu, tmp_path)
    told = await handle.wait_original(lambda m: "ahead of yours" in m.content, timeout=10)
    assert "Checking, 1 zip ahead of yours" in told.content and told.ephemeral
    assert gate.waiting == 1 and nothing_created(replicate_emu)
    release.set()
    await holder
    await handle.wait_original(lambda m: "started" in m.content, timeout=15)
    assert replicate_emu.counts["trainings_created"] == 1
