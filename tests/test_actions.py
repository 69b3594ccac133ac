"""The buttons under a result (U1…U4, V1…V4, Remix) and Apps ▸ "Upscale image", end to
end: the real bot and the real replicate client against both emulators."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

from PIL import Image

from tests.emulators.discord import DiscordEmulator, InteractionHandle, Message
from tests.emulators.replicate import (
    FLUX_DEV,
    UPSCALER_MODEL,
    UPSCALER_VERSION_ID,
    ReplicateEmulator,
    render_image,
)
from tests.harness import BotHarness
from tests.helpers.store import recent_generations


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def has_images(count: int):
    return lambda m: len(m.attachments) == count


def button_ids(message: Message) -> list[str]:
    return [c.custom_id or "" for c in message.components]


def labels(message: Message) -> list[str]:
    return [c.label or "" for c in message.components]


def custom_id(message: Message, prefix: str) -> str:
    return next(cid for cid in button_ids(message) if cid.startswith(prefix))


async def generate(
    discord_emu: DiscordEmulator, **options: object
) -> tuple[InteractionHandle, Message]:
    handle = await discord_emu.slash("generate", options={"prompt": "a lighthouse", **options})
    count = int(options.get("count", 1))  # type: ignore[call-overload]
    return handle, await handle.wait_original(has_images(count), timeout=10)


async def press_and_wait(
    discord_emu: DiscordEmulator, message: Message, prefix: str, images: int, **kwargs: object
) -> tuple[InteractionHandle, Message]:
    press = await discord_emu.press(message, custom_id(message, prefix), **kwargs)  # type: ignore[arg-type]
    callback = await press.first_response(timeout=3)
    assert callback.type == 5, callback.data
    return press, await press.wait_original(has_images(images), timeout=15)


async def test_u2_on_a_four_image_result_upscales_the_second_image(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle, message = await generate(discord_emu, count=4)
    gen_id = custom_id(message, "gen:reroll:").split(":")[2]
    assert labels(message)[:8] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"]
    rows = [row["components"] for row in message.current.raw_components]
    assert [len(row) for row in rows] == [4, 4, 4]

    _, upscaled = await press_and_wait(discord_emu, message, f"gen:up:{gen_id}:2", 1)
    job = replicate_emu.last_prediction
    assert job.model == UPSCALER_MODEL and job.version == UPSCALER_VERSION_ID
    assert job.input["scale"] == 2
    received = job.images["image"]
    assert received.source == "output", "a fresh parent output is sent as its URL"
    assert received.data == message.attachments[1][1]
    width, height = size_of(message.attachments[1][1])
    assert size_of(upscaled.attachments[0][1]) == (2 * width, 2 * height)
    assert not any(cid.startswith("gen:up:") for cid in button_ids(upscaled))
    assert any(cid.startswith("gen:vary:") for cid in button_ids(upscaled))
    assert "Upscaled" in upscaled.embeds[0]["title"]
    record = (await recent_generations(running.services.store, limit=1))[0]
    assert record.params["kind"] == "upscale" and record.params["parent"] == gen_id
    assert record.user_id == handle.user.id and record.status == "succeeded"


async def test_v1_sends_the_first_image_with_the_strength_and_a_new_seed(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    _, message = await generate(discord_emu, count=2, seed=1234)
    _, varied = await press_and_wait(discord_emu, message, "gen:vary:", 2)
    job = replicate_emu.last_prediction
    assert job.model == FLUX_DEV
    assert job.input["prompt"] == "a lighthouse"
    assert job.input["prompt_strength"] == 0.6
    assert job.input["num_outputs"] == 2
    assert job.input["seed"] != 1234
    assert job.images["image"].data == message.attachments[0][1]
    fields = {f["name"]: f["value"] for f in varied.embeds[0]["fields"]}
    assert fields["Strength"] == "0.6"
    assert any(cid.startswith("gen:up:") for cid in button_ids(varied))


async def test_vary_of_a_trained_model_runs_on_it(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    model = replicate_emu.add_model(replicate_emu.username, "my-dog", with_version=True)
    version = next(iter(model.versions))
    await running.services.store.upsert_model(
        replicate_emu.username,
        "my-dog",
        guild_id=discord_emu.guild.id,
        creator_key="discord:1",
        trigger_word="RUFUS",
        latest_version=version,
    )
    _, message = await generate(discord_emu, model=f"{replicate_emu.username}/my-dog")
    await press_and_wait(discord_emu, message, "gen:vary:", 1)
    job = replicate_emu.last_prediction
    assert job.version == version
    assert job.input["prompt"] == "RUFUS a lighthouse"
    assert job.input["image"].startswith("https://")


async def test_remix_opens_the_request_and_runs_the_edited_prompt(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle, message = await generate(discord_emu, count=2, aspect_ratio="16:9")
    opened = await discord_emu.press(message, custom_id(message, "gen:remix:"), user=handle.user)
    callback = await opened.first_response(timeout=3)
    assert callback.type == 9, "Remix answers with a modal"
    fields = {
        row["components"][0]["custom_id"]: row["components"][0].get("value")
        for row in callback.data["components"]
    }
    assert fields["prompt"] == "a lighthouse"
    assert fields["aspect_ratio"] == "16:9" and fields["count"] == "2"
    submitted = await discord_emu.submit_modal(opened, {"prompt": "a lighthouse at night"})
    result = await submitted.wait_original(has_images(2), timeout=10)
    job = replicate_emu.last_prediction
    assert job.input["prompt"] == "a lighthouse at night"
    assert job.input["aspect_ratio"] == "16:9" and job.input["num_outputs"] == 2
    assert job.model == "black-forest-labs/flux-schnell"
    assert result.embeds[0]["description"] == "a lighthouse at night"
    assert replicate_emu.counts["predictions_created"] == 2


async def test_remix_refuses_a_bad_value_without_spending(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle, message = await generate(discord_emu)
    opened = await discord_emu.press(message, custom_id(message, "gen:remix:"), user=handle.user)
    await opened.first_response(timeout=3)
    submitted = await discord_emu.submit_modal(opened, {"count": "9"})
    callback = await submitted.first_response(timeout=3)
    assert callback.data["flags"] & 64 and "Images must be" in callback.data["content"]
    assert replicate_emu.counts["predictions_created"] == 1


async def test_each_action_refused_by_the_cooldown_says_so_and_spends_nothing(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start(GENERATE_COOLDOWN_SECONDS="600")
    handle, message = await generate(discord_emu, count=2)
    for prefix in ("gen:up:", "gen:vary:", "gen:reroll:"):
        press = await discord_emu.press(message, custom_id(message, prefix), user=handle.user)
        callback = await press.first_response(timeout=3)
        assert callback.type == 4 and callback.data["flags"] & 64
        assert re.search(r"again in \d+ s", callback.data["content"])
    opened = await discord_emu.press(message, custom_id(message, "gen:remix:"), user=handle.user)
    await opened.first_response(timeout=3)
    submitted = await discord_emu.submit_modal(opened, {"prompt": "another"})
    callback = await submitted.first_response(timeout=3)
    assert callback.type == 4 and "again in" in callback.data["content"]
    assert replicate_emu.counts["predictions_created"] == 1
    assert replicate_emu.counts["files_created"] == 0
    assert len(await recent_generations(harness.services.store)) == 1


async def test_each_action_refused_by_the_daily_quota_says_so(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start(GENERATIONS_PER_USER_PER_DAY="1")
    handle, message = await generate(discord_emu)
    for prefix in ("gen:up:", "gen:vary:"):
        press = await discord_emu.press(message, custom_id(message, prefix), user=handle.user)
        callback = await press.first_response(timeout=3)
        assert "for today" in callback.data["content"] and callback.data["flags"] & 64
    assert replicate_emu.counts["predictions_created"] == 1


async def test_anyone_may_press_and_is_charged_for_it(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    _, message = await generate(discord_emu)
    other = discord_emu.add_user("other")
    await press_and_wait(discord_emu, message, "gen:up:", 1, user=other)
    record = (await recent_generations(running.services.store, limit=1))[0]
    assert record.user_key == f"discord:{other.id}"


async def test_buttons_of_a_result_posted_before_a_restart_still_work(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start()
    handle, message = await generate(discord_emu, count=2)
    await harness.restart()
    await press_and_wait(discord_emu, message, "gen:up:", 1, user=handle.user)
    assert replicate_emu.last_prediction.model == UPSCALER_MODEL
    await press_and_wait(discord_emu, message, "gen:vary:", 2, user=handle.user)
    assert replicate_emu.last_prediction.model == FLUX_DEV
    opened = await discord_emu.press(message, custom_id(message, "gen:remix:"), user=handle.user)
    assert (await opened.first_response(timeout=3)).type == 9


async def test_an_expired_output_is_taken_from_the_posted_image(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """Replicate deletes outputs after an hour: a U pressed a day later sends the image
    the bot posted in Discord (fetched again, checked, sent inline)."""
    _, message = await generate(discord_emu, count=2)
    parent = (await recent_generations(running.services.store, limit=1))[0]
    replicate_emu.expire_outputs()
    a_day_ago = datetime.now(UTC) - timedelta(days=1)
    await running.services.store.update_generation(parent.id, finished_at=a_day_ago)
    await press_and_wait(discord_emu, message, f"gen:up:{parent.id}:2", 1)
    received = replicate_emu.last_prediction.images["image"]
    assert received.source in ("data", "file")
    assert received.data == message.attachments[1][1]


async def test_a_reroll_whose_image_is_gone_says_so(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """A variation rerolled a day later, after its source result was deleted: nothing
    to send, and the user is told why."""
    handle, message = await generate(discord_emu)
    parent = (await recent_generations(running.services.store, limit=1))[0]
    _, varied = await press_and_wait(discord_emu, message, "gen:vary:", 1, user=handle.user)
    delete = await discord_emu.press(message, custom_id(message, "gen:delete:"), user=handle.user)
    await delete.first_response(timeout=3)
    await handle.wait_original(lambda m: m.deleted, timeout=5)
    replicate_emu.expire_outputs()
    a_day_ago = datetime.now(UTC) - timedelta(days=1)
    await running.services.store.update_generation(parent.id, finished_at=a_day_ago)
    press = await discord_emu.press(varied, custom_id(varied, "gen:reroll:"), user=handle.user)
    await press.wait_original(lambda m: "no longer available" in m.content, timeout=10)
    assert replicate_emu.counts["predictions_created"] == 2


async def test_upscale_menu_upscales_the_images_of_another_users_message(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    poster, asker = discord_emu.add_user("poster"), discord_emu.add_user("asker")
    first, second = render_image(64, 48, "png", 1), render_image(40, 40, "jpg", 2)
    posted = await discord_emu.user_message(
        "look at these",
        user=poster,
        attachments=[("a.png", first), ("notes.txt", b"hello"), ("b.jpg", second)],
    )
    handle = await discord_emu.message_command("Upscale image", posted, user=asker)
    assert (await handle.first_response(timeout=3)).type == 5
    result = await handle.wait_original(has_images(2), timeout=15)
    jobs = list(replicate_emu.predictions.values())[-2:]
    assert {job.model for job in jobs} == {UPSCALER_MODEL}
    assert sorted(job.images["image"].data for job in jobs) == sorted([first, second])
    assert sorted(size_of(data) for _, data in result.attachments) == [(80, 80), (128, 96)]
    assert not any(cid.startswith("gen:up:") for cid in button_ids(result))
    record = (await recent_generations(running.services.store, limit=1))[0]
    assert record.user_key == f"discord:{asker.id}" and record.params["kind"] == "upscale"
    assert record.prompt == "look at these"


async def test_upscale_menu_on_a_message_without_images_is_refused(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    posted = await discord_emu.user_message("no pictures here")
    handle = await discord_emu.message_command("Upscale image", posted)
    callback = await handle.first_response(timeout=3)
    assert callback.data["flags"] & 64 and "no image" in callback.data["content"]
    assert replicate_emu.counts["predictions_created"] == 0
