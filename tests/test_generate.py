"""/generate end to end: the real bot and the real replicate client against both emulators."""

from __future__ import annotations

import io
import re

import aiohttp
import pytest
from PIL import Image

from tests.emulators.discord import DiscordEmulator, Message, Perm
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness
from tests.helpers.ports import free_port
from tests.helpers.store import recent_generations

NSFW_FLUX = (
    "All generated images contained NSFW content. Try running it again with a different prompt."
)


def decodes(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def has_images(count: int):
    return lambda m: len(m.attachments) == count


def button_ids(message: Message) -> list[str]:
    return [c.custom_id or "" for c in message.components]


def button(message: Message, action: str) -> str:
    return next(cid for cid in button_ids(message) if cid.startswith(f"gen:{action}:"))


async def test_images_arrive_as_attachments_that_decode(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle = await discord_emu.slash("generate", options={"prompt": "a red fox", "count": 4})
    callback = await handle.first_response(timeout=3)
    assert callback.type == 5, "the command must defer at once"
    message = await handle.wait_original(has_images(4), timeout=10)
    for _name, data in message.attachments:
        assert decodes(data)
    embed = message.embeds[0]
    assert embed["description"] == "a red fox"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Model"] == "`black-forest-labs/flux-schnell`"
    assert fields["Aspect ratio"] == "1:1"
    assert fields["Requested by"] == f"<@{handle.user.id}>"
    assert re.fullmatch(r"\d+", fields["Seed"])
    gen_id = button(message, "reroll").split(":")[2]
    assert button_ids(message) == [
        *(f"gen:up:{gen_id}:{n}" for n in range(1, 5)),
        *(f"gen:vary:{gen_id}:{n}" for n in range(1, 5)),
        *(f"gen:{action}:{gen_id}" for action in ("reroll", "remix", "details", "delete")),
    ]
    assert replicate_emu.last_prediction_input["num_outputs"] == 4
    assert replicate_emu.last_prediction_input["prompt"] == "a red fox"
    generation = (await recent_generations(running.services.store, limit=1))[0]
    assert generation.status == "succeeded"
    assert generation.prediction_id == replicate_emu.last_prediction.id
    assert generation.predict_time is not None


@pytest.mark.parametrize("ratio", ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9"])
async def test_each_aspect_ratio_reaches_replicate(
    running: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    ratio: str,
) -> None:
    handle = await discord_emu.slash("generate", options={"prompt": "x", "aspect_ratio": ratio})
    message = await handle.wait_original(has_images(1), timeout=10)
    assert replicate_emu.last_prediction_input["aspect_ratio"] == ratio
    width, height = decodes(message.attachments[0][1])
    w, h = (int(part) for part in ratio.split(":"))
    assert abs(width / height - w / h) < 0.1


async def test_seed_is_passed_and_shown(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle = await discord_emu.slash("generate", options={"prompt": "x", "seed": 1234})
    message = await handle.wait_original(has_images(1), timeout=10)
    assert replicate_emu.last_prediction_input["seed"] == 1234
    assert {f["name"]: f["value"] for f in message.embeds[0]["fields"]}["Seed"] == "1234"


async def test_progress_message_shows_generating_then_done(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.prediction_mode = "manual"
    handle = await discord_emu.slash("generate", options={"prompt": "slow"})
    await handle.wait_original(lambda m: "Generating" in m.content, timeout=5)
    prediction = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
    await replicate_emu.complete_prediction(prediction.id)
    await handle.wait_original(has_images(1), timeout=10)


async def test_a_job_done_before_the_progress_delay_is_posted_without_progress_edits(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    # PROGRESS_AFTER_SECONDS is 1 in the tests; the emulated prediction takes 0.02 s.
    handle = await discord_emu.slash("generate", options={"prompt": "quick"})
    message = await handle.wait_original(has_images(1), timeout=10)
    assert not any("Generating" in version.content for version in message.versions)


async def test_trained_model_gets_its_trigger_word(
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
    choices = await discord_emu.autocomplete("generate", "model", "dog")
    assert [c["value"] for c in choices] == [f"{replicate_emu.username}/my-dog"]
    handle = await discord_emu.slash(
        "generate",
        options={"prompt": "a dog on the beach", "model": f"{replicate_emu.username}/my-dog"},
    )
    message = await handle.wait_original(has_images(1), timeout=10)
    assert replicate_emu.last_prediction_input["prompt"] == "RUFUS a dog on the beach"
    assert replicate_emu.last_prediction.version == version
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    assert "RUFUS" in fields["Trigger word"]


async def test_reroll_of_a_trained_model_adds_its_trigger_word_once(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    model = replicate_emu.add_model(replicate_emu.username, "my-cat", with_version=True)
    await running.services.store.upsert_model(
        replicate_emu.username,
        "my-cat",
        guild_id=discord_emu.guild.id,
        creator_key="discord:1",
        trigger_word="MITTENS",
        latest_version=next(iter(model.versions)),
    )
    handle = await discord_emu.slash(
        "generate", options={"prompt": "a cat", "model": f"{replicate_emu.username}/my-cat"}
    )
    message = await handle.wait_original(has_images(1), timeout=10)
    first = (await recent_generations(running.services.store, limit=1))[0]
    again = await running.services.generations.reroll_of(first.id)
    assert again is not None and again.prompt == "a cat" and again.model == first.model
    press = await discord_emu.press(message, button(message, "reroll"), user=handle.user)
    await press.wait_original(has_images(1), timeout=10)
    assert replicate_emu.counts["predictions_created"] == 2
    assert replicate_emu.last_prediction_input["prompt"] == "MITTENS a cat"
    second = (await recent_generations(running.services.store, limit=1))[0]
    assert second.id != first.id and second.params["trigger_prepended"]


async def test_unknown_model_lists_valid_ones(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle = await discord_emu.slash("generate", options={"prompt": "x", "model": "no/such"})
    message = await handle.wait_original(lambda m: "Unknown model" in m.content, timeout=5)
    assert "black-forest-labs/flux-schnell" in message.content
    assert replicate_emu.counts["predictions_created"] == 0


async def test_nsfw_refusal_is_explained(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.fail_next_prediction(NSFW_FLUX)
    handle = await discord_emu.slash("generate", options={"prompt": "something"})
    message = await handle.wait_original(lambda m: m.content.startswith("❌"), timeout=10)
    assert "NSFW" in message.content or "safety" in message.content.lower()
    assert not message.attachments
    generation = (await recent_generations(running.services.store, limit=1))[0]
    assert generation.status == "failed"


async def test_rate_limited_create_is_retried_then_succeeds(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.rate_limit_next_create(retry_after=0.1)
    handle = await discord_emu.slash("generate", options={"prompt": "x"})
    await handle.wait_original(has_images(1), timeout=10)
    assert replicate_emu.counts["predictions_created"] == 1


async def test_replicate_down_is_explained_and_not_retried(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.error_next("POST", r"/v1/models/.*/predictions", status=503)
    handle = await discord_emu.slash("generate", options={"prompt": "x"})
    message = await handle.wait_original(lambda m: m.content.startswith("❌"), timeout=10)
    assert "Replicate" in message.content
    assert replicate_emu.request_count("POST", r"/v1/models/.*/predictions") == 1


async def test_cooldown_refuses_with_when_to_retry(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start(GENERATE_COOLDOWN_SECONDS="60")
    first = await discord_emu.slash("generate", options={"prompt": "x"})
    await first.wait_original(has_images(1), timeout=10)
    second = await discord_emu.slash("generate", options={"prompt": "y"})
    callback = await second.first_response(timeout=3)
    assert callback.type == 4 and callback.data["flags"] & 64
    assert re.search(r"again in \d+ s", callback.data["content"])
    assert replicate_emu.counts["predictions_created"] == 1


async def test_daily_quota(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start(GENERATIONS_PER_USER_PER_DAY="1")
    first = await discord_emu.slash("generate", options={"prompt": "x"})
    await first.wait_original(has_images(1), timeout=10)
    second = await discord_emu.slash("generate", options={"prompt": "y"})
    callback = await second.first_response(timeout=3)
    assert "for today" in callback.data["content"]
    assert "00:00 UTC" in callback.data["content"]


async def test_daily_quota_counts_what_was_stored_before_a_restart(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """Today's generations are counted from the store when the bot starts, for everyone
    at once: a restart does not hand out a fresh quota."""
    await harness.start(GENERATIONS_PER_USER_PER_DAY="2")
    heavy, light = discord_emu.add_user("heavy"), discord_emu.add_user("light")
    for prompt in ("a", "b"):
        done = await discord_emu.slash("generate", options={"prompt": prompt}, user=heavy)
        await done.wait_original(has_images(1), timeout=10)
    await harness.restart(GENERATIONS_PER_USER_PER_DAY="2")
    refused = await discord_emu.slash("generate", options={"prompt": "c"}, user=heavy)
    callback = await refused.first_response(timeout=3)
    assert "for today" in callback.data["content"]
    allowed = await discord_emu.slash("generate", options={"prompt": "d"}, user=light)
    await allowed.wait_original(has_images(1), timeout=10)
    assert replicate_emu.counts["predictions_created"] == 3


async def test_queue_positions_with_concurrency_one(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start(MAX_CONCURRENT_GENERATIONS="1")
    replicate_emu.prediction_mode = "manual"
    users = [discord_emu.add_user(f"user{i}") for i in range(3)]
    handles = []
    for index, user in enumerate(users):
        handles.append(
            await discord_emu.slash("generate", options={"prompt": f"p{index}"}, user=user)
        )
        await handles[-1].first_response(timeout=3)
    await handles[1].wait_original(lambda m: "position 1 of 2" in m.content, timeout=5)
    await handles[2].wait_original(lambda m: "position 2 of 2" in m.content, timeout=5)
    await replicate_emu.wait_for(lambda: replicate_emu.counts["predictions_created"] >= 1)
    assert replicate_emu.counts["predictions_created"] == 1
    for expected in range(3):
        prediction = await replicate_emu.wait_for(
            lambda n=expected: (
                len(replicate_emu.predictions) == n + 1 and replicate_emu.last_prediction
            )
        )
        assert prediction.input["prompt"] == f"p{expected}", "the queue must be first in, first out"
        await replicate_emu.complete_prediction(prediction.id)
        await handles[expected].wait_original(has_images(1), timeout=10)
        if expected == 0:
            await handles[2].wait_original(lambda m: "position 1 of 1" in m.content, timeout=5)


async def test_busy_when_queue_is_full(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start(MAX_CONCURRENT_GENERATIONS="1", MAX_QUEUED_GENERATIONS="1")
    replicate_emu.prediction_mode = "manual"
    first = await discord_emu.slash("generate", options={"prompt": "a"})
    await first.wait_original(lambda m: "Generating" in m.content, timeout=5)
    second = await discord_emu.slash("generate", options={"prompt": "b"})
    await second.wait_original(lambda m: "position 1 of 1" in m.content, timeout=5)
    third = await discord_emu.slash("generate", options={"prompt": "c"})
    callback = await third.first_response(timeout=3)
    assert "busy" in callback.data["content"] and callback.data["flags"] & 64


async def test_cancel_while_queued(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start(MAX_CONCURRENT_GENERATIONS="1")
    replicate_emu.prediction_mode = "manual"
    alice, bob = discord_emu.add_user("alice"), discord_emu.add_user("bob")
    first = await discord_emu.slash("generate", options={"prompt": "a"}, user=alice)
    await first.wait_original(lambda m: "Generating" in m.content, timeout=5)
    second = await discord_emu.slash("generate", options={"prompt": "b"}, user=bob)
    queued = await second.wait_original(lambda m: "position 1 of 1" in m.content, timeout=5)
    refused = await discord_emu.press(queued, button(queued, "cancel"), user=alice)
    assert "Only the person" in (await refused.first_response()).data["content"]
    press = await discord_emu.press(queued, button(queued, "cancel"), user=bob)
    await press.first_response()
    await second.wait_original(lambda m: "Canceled" in m.content, timeout=5)
    prediction = replicate_emu.last_prediction
    await replicate_emu.complete_prediction(prediction.id)
    await first.wait_original(has_images(1), timeout=10)
    assert replicate_emu.counts["predictions_created"] == 1
    statuses = {g.prompt: g.status for g in await recent_generations(harness.services.store)}
    assert statuses == {"a": "succeeded", "b": "canceled"}


async def test_cancel_while_running_cancels_on_replicate(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.prediction_mode = "manual"
    handle = await discord_emu.slash("generate", options={"prompt": "a"})
    message = await handle.wait_original(lambda m: "Generating" in m.content, timeout=5)
    await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
    press = await discord_emu.press(message, button(message, "cancel"), user=handle.user)
    await press.first_response()
    await handle.wait_original(lambda m: "Canceled" in m.content, timeout=5)
    assert replicate_emu.last_prediction.status == "canceled"
    generation = (await recent_generations(running.services.store, limit=1))[0]
    assert generation.status == "canceled"


async def test_reroll_after_restart(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start()
    handle = await discord_emu.slash("generate", options={"prompt": "a castle", "seed": 7})
    message = await handle.wait_original(has_images(1), timeout=10)
    await harness.restart()
    press = await discord_emu.press(message, button(message, "reroll"), user=handle.user)
    callback = await press.first_response(timeout=3)
    assert callback.type == 5
    rerolled = await press.wait_original(has_images(1), timeout=10)
    assert replicate_emu.counts["predictions_created"] == 2
    assert replicate_emu.last_prediction_input["prompt"] == "a castle"
    assert replicate_emu.last_prediction_input["seed"] != 7
    assert rerolled.embeds[0]["description"] == "a castle"


async def test_details_shows_full_prompt(running: BotHarness, discord_emu: DiscordEmulator) -> None:
    prompt = "a very long prompt " * 60
    handle = await discord_emu.slash("generate", options={"prompt": prompt[:1000]})
    message = await handle.wait_original(has_images(1), timeout=10)
    assert len(message.embeds[0]["description"]) <= 1000
    press = await discord_emu.press(message, button(message, "details"), user=handle.user)
    callback = await press.first_response()
    assert callback.data["flags"] & 64
    assert prompt[:1000].strip() in callback.data["content"]


async def test_delete_by_someone_else_is_refused(
    running: BotHarness, discord_emu: DiscordEmulator
) -> None:
    owner = discord_emu.add_user("owner")
    stranger = discord_emu.add_user("stranger")
    moderator = discord_emu.add_user("mod", permissions=Perm.MANAGE_MESSAGES)
    handle = await discord_emu.slash("generate", options={"prompt": "x"}, user=owner)
    message = await handle.wait_original(has_images(1), timeout=10)
    press = await discord_emu.press(message, button(message, "delete"), user=stranger)
    callback = await press.first_response()
    assert "Only the person" in callback.data["content"] and callback.data["flags"] & 64
    assert not message.deleted
    press = await discord_emu.press(message, button(message, "delete"), user=moderator)
    await press.first_response()
    await handle.wait_original(lambda m: m.deleted, timeout=5)


async def test_oversized_output_is_reencoded_under_the_limit(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    limit = 256 * 1024
    replicate_emu.next_output_bytes = 1024 * 1024
    handle = await discord_emu.slash(
        "generate", options={"prompt": "big"}, attachment_size_limit=limit
    )
    message = await handle.wait_original(has_images(1), timeout=20)
    name, data = message.attachments[0]
    assert len(data) <= limit
    assert name.endswith((".webp", ".jpg"))
    assert decodes(data)


async def test_everyone_in_prompt_pings_nobody(
    running: BotHarness, discord_emu: DiscordEmulator
) -> None:
    handle = await discord_emu.slash("generate", options={"prompt": "@everyone look <@1>"})
    message = await handle.wait_original(has_images(1), timeout=10)
    assert not message.pinged_everyone()
    assert not message.pinged_users()


async def test_missing_attach_permission_is_refused_before_spending(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    channel = discord_emu.add_channel("no-files", bot_deny=Perm.ATTACH_FILES)
    handle = await discord_emu.slash("generate", options={"prompt": "x"}, channel=channel)
    callback = await handle.first_response(timeout=3)
    assert "Attach Files" in callback.data["content"]
    assert replicate_emu.counts["predictions_created"] == 0


async def test_expired_token_posts_in_channel_with_mention(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start()
    replicate_emu.prediction_mode = "manual"
    handle = await discord_emu.slash("generate", options={"prompt": "late"})
    await handle.wait_original(lambda m: "Generating" in m.content, timeout=5)
    discord_emu.expire(handle)
    prediction = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
    await replicate_emu.complete_prediction(prediction.id)
    message = await discord_emu.wait_for_message(
        discord_emu.channel.id,
        lambda m: len(m.attachments) == 1 and m.webhook_id is None,
        timeout=10,
    )
    assert handle.user.id in {u.id for u in message.pinged_users()}
    assert not message.pinged_everyone()


async def test_with_public_url_the_images_come_by_webhook_without_polling(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """With PUBLIC_URL, Replicate tells the bot when a prediction is done: no polls,
    and a forged delivery for it is refused and changes nothing."""
    port = free_port()
    await harness.start(PUBLIC_URL=f"http://127.0.0.1:{port}", HTTP_PORT=str(port))
    replicate_emu.prediction_mode = "manual"
    handle = await discord_emu.slash("generate", options={"prompt": "a kingfisher"})
    job = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
    assert job.webhook == f"http://127.0.0.1:{port}/webhooks/replicate"
    async with aiohttp.ClientSession() as http:
        forged = {"id": job.id, "status": "failed", "error": "forged"}
        async with http.post(job.webhook, json=forged, headers={"webhook-id": "x"}) as resp:
            assert resp.status == 401
    await replicate_emu.complete_prediction(job.id)
    message = await handle.wait_original(has_images(1), timeout=10)
    assert "forged" not in message.content
    assert replicate_emu.counts["webhooks_delivered"] >= 1
    assert replicate_emu.request_count("GET", r"/v1/predictions(/[^/]+)?") == 0
