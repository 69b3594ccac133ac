"""/generate with an input image, and options that fit each model (read from its schema):
the real bot and the real replicate client against both emulators."""

from __future__ import annotations

import pytest

from tests.emulators.discord import DiscordEmulator, InteractionHandle
from tests.emulators.replicate import (
    FLUX_DEV,
    FLUX_SCHNELL,
    CogInputs,
    ReplicateEmulator,
    cog_schema,
    render_image,
    render_large_png,
)
from tests.harness import BotHarness
from tests.helpers.store import recent_generations

MODELS = f"{FLUX_SCHNELL},{FLUX_DEV}"


def has_images(count: int):
    return lambda m: len(m.attachments) == count


@pytest.fixture
async def with_dev(harness: BotHarness) -> BotHarness:
    await harness.start(GENERATE_MODELS=MODELS)
    return harness


async def refused(handle: InteractionHandle) -> str:
    callback = await handle.first_response(timeout=5)
    assert callback.type == 4 and callback.data["flags"] & 64, callback.data
    return str(callback.data["content"])


async def add_trained(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> tuple[str, str]:
    model = replicate_emu.add_model(replicate_emu.username, "my-dog", with_version=True)
    version = next(iter(model.versions))
    await harness.services.store.upsert_model(
        replicate_emu.username,
        "my-dog",
        guild_id=discord_emu.guild.id,
        creator_key="discord:1",
        trigger_word="RUFUS",
        latest_version=version,
    )
    return f"{replicate_emu.username}/my-dog", version


async def test_an_image_reaches_a_model_that_takes_one_with_its_strength(
    with_dev: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    picture = render_image(96, 64, "png", 5)
    handle = await discord_emu.slash(
        "generate",
        options={"prompt": "as a watercolour", "model": FLUX_DEV, "strength": 0.4},
        attachments={"image": ("photo.png", picture)},
    )
    message = await handle.wait_original(has_images(1), timeout=10)
    job = replicate_emu.last_prediction
    assert job.input["prompt_strength"] == 0.4
    received = job.images["image"]
    assert received.source == "data" and received.data == picture
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    assert fields["Strength"] == "0.4"
    record = (await recent_generations(with_dev.services.store, limit=1))[0]
    assert record.params["sources"][0]["filename"] == "photo.png"


async def test_a_big_image_is_uploaded_through_the_files_api(
    with_dev: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    picture = render_large_png(600 * 1024)
    handle = await discord_emu.slash(
        "generate",
        options={"prompt": "x", "model": FLUX_DEV},
        attachments={"image": ("big.png", picture)},
    )
    await handle.wait_original(has_images(1), timeout=15)
    received = replicate_emu.last_prediction.images["image"]
    assert received.source == "file" and received.data == picture
    assert replicate_emu.counts["files_created"] == 1


@pytest.mark.parametrize(
    ("filename", "data", "words"),
    [
        ("notes.txt", b"just some text, not a picture", "not an image"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "could not be read"),
    ],
    ids=["text", "damaged"],
)
async def test_a_file_that_is_no_image_is_refused_before_any_prediction(
    with_dev: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    filename: str,
    data: bytes,
    words: str,
) -> None:
    handle = await discord_emu.slash(
        "generate",
        options={"prompt": "x", "model": FLUX_DEV},
        attachments={"image": (filename, data)},
    )
    assert words in await refused(handle)
    assert replicate_emu.counts["predictions_created"] == 0
    assert replicate_emu.counts["files_created"] == 0
    assert await recent_generations(with_dev.services.store) == []


async def test_an_oversized_image_is_refused_without_downloading_it(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start(GENERATE_MODELS=MODELS, MAX_INPUT_IMAGE_MB="1")
    handle = await discord_emu.slash(
        "generate",
        options={"prompt": "x", "model": FLUX_DEV},
        attachments={"image": ("huge.png", render_large_png(2 * 1024 * 1024))},
    )
    assert "too large" in await refused(handle)
    assert "huge.png" not in discord_emu.attachment_downloads
    assert replicate_emu.counts["predictions_created"] == 0


async def test_an_image_for_a_model_without_image_input_names_those_that_take_one(
    with_dev: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle = await discord_emu.slash(
        "generate",
        options={"prompt": "x"},
        attachments={"image": ("photo.png", render_image(32, 32, "png", 1))},
    )
    text = await refused(handle)
    assert f"`{FLUX_SCHNELL}` does not take an input image" in text
    assert f"`{FLUX_DEV}`" in text
    assert "photo.png" not in discord_emu.attachment_downloads
    assert replicate_emu.counts["predictions_created"] == 0


async def test_strength_without_an_image_is_refused(
    with_dev: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle = await discord_emu.slash(
        "generate", options={"prompt": "x", "model": FLUX_DEV, "strength": 0.5}
    )
    assert "input image" in await refused(handle)
    assert replicate_emu.counts["predictions_created"] == 0


async def test_the_autocomplete_shows_which_models_take_an_image(
    with_dev: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await replicate_emu.wait_for(
        lambda: with_dev.services.replicate.schemas.cached(FLUX_DEV) is not None
    )
    offered = await discord_emu.autocomplete("generate", "model", "")
    choices = {c["value"]: c["name"] for c in offered}
    assert "takes an image" in choices[FLUX_DEV]
    assert "takes an image" not in choices[FLUX_SCHNELL]


async def test_count_above_the_models_maximum_makes_several_predictions(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    inputs = (
        CogInputs()
        .add("prompt", "string", "Prompt")
        .add("num_outputs", "integer", "Images", default=1, minimum=1, maximum=1)
        .add("seed", "integer", "Seed")
    )
    schema = cog_schema(inputs, ["prompt"], {"type": "array", "items": {"type": "string"}})
    replicate_emu.add_model("acme", "one-at-a-time", visibility="public", schema=schema)
    await harness.start(GENERATE_MODELS="acme/one-at-a-time")
    handle = await discord_emu.slash("generate", options={"prompt": "owls", "count": 4, "seed": 10})
    message = await handle.wait_original(has_images(4), timeout=15)
    jobs = list(replicate_emu.predictions.values())
    assert len(jobs) == 4
    assert sorted(job.input["seed"] for job in jobs) == [10, 11, 12, 13]
    assert all(job.input["num_outputs"] == 1 for job in jobs)
    assert "aspect_ratio" not in jobs[0].input, "the model takes no aspect ratio"
    assert len({data for _, data in message.attachments}) == 4
    record = (await recent_generations(harness.services.store, limit=1))[0]
    assert record.params["parts"] == [1, 1, 1, 1]
    assert sorted(record.params["predictions"]) == sorted(job.id for job in jobs)


async def test_cancel_stops_every_prediction_of_a_job(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    inputs = CogInputs().add("prompt", "string", "Prompt")
    schema = cog_schema(inputs, ["prompt"], {"type": "array", "items": {"type": "string"}})
    replicate_emu.add_model("acme", "single", visibility="public", schema=schema)
    await harness.start(GENERATE_MODELS="acme/single")
    replicate_emu.prediction_mode = "manual"
    handle = await discord_emu.slash("generate", options={"prompt": "owls", "count": 3})
    message = await handle.wait_original(lambda m: "Generating" in m.content, timeout=5)
    await replicate_emu.wait_for(lambda: len(replicate_emu.predictions) == 3)
    cancel = next(c.custom_id for c in message.components if "cancel" in (c.custom_id or ""))
    press = await discord_emu.press(message, cancel or "", user=handle.user)
    await press.first_response()
    await handle.wait_original(lambda m: "Canceled" in m.content, timeout=5)
    await replicate_emu.wait_for(
        lambda: all(job.status == "canceled" for job in replicate_emu.predictions.values())
    )


async def test_lora_scale_reaches_a_trained_model(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    model, version = await add_trained(running, discord_emu, replicate_emu)
    handle = await discord_emu.slash(
        "generate", options={"prompt": "a dog", "model": model, "lora_scale": 0.7}
    )
    message = await handle.wait_original(has_images(1), timeout=10)
    job = replicate_emu.last_prediction
    assert job.version == version and job.input["lora_scale"] == 0.7
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    assert fields["LoRA scale"] == "0.7"


async def test_without_lora_scale_the_trained_models_default_applies(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    model, _ = await add_trained(running, discord_emu, replicate_emu)
    handle = await discord_emu.slash("generate", options={"prompt": "a dog", "model": model})
    await handle.wait_original(has_images(1), timeout=10)
    assert "lora_scale" not in replicate_emu.last_prediction.input


async def test_lora_scale_is_refused_for_flux_schnell_naming_what_it_takes(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle = await discord_emu.slash("generate", options={"prompt": "x", "lora_scale": 0.7})
    text = await refused(handle)
    assert f"{FLUX_SCHNELL} does not take lora_scale" in text
    assert "num_outputs" in text
    assert replicate_emu.counts["predictions_created"] == 0


async def test_lora_scale_out_of_the_models_range_is_refused(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    model, _ = await add_trained(running, discord_emu, replicate_emu)
    handle = await discord_emu.slash(
        "generate", options={"prompt": "a dog", "model": model, "lora_scale": 5.0}
    )
    assert "lora_scale must be -1 to 3" in await refused(handle)
    assert replicate_emu.counts["predictions_created"] == 0


async def test_queued_jobs_with_input_images_run_after_a_restart(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """A variation and a /generate with a picture wait in the queue when the bot
    restarts: the new process reads their images again (the parent's output, the
    attachment's link) and posts their images."""
    await harness.start(GENERATE_MODELS=MODELS, MAX_CONCURRENT_GENERATIONS="1")
    first = await discord_emu.slash("generate", options={"prompt": "a lighthouse"})
    result = await first.wait_original(has_images(1), timeout=10)
    replicate_emu.prediction_mode = "manual"
    blocker = await discord_emu.slash("generate", options={"prompt": "blocker"})
    await blocker.wait_original(lambda m: "Generating" in m.content, timeout=5)
    vary = next(c.custom_id or "" for c in result.components if "vary" in (c.custom_id or ""))
    varied = await discord_emu.press(result, vary)
    await varied.wait_original(lambda m: "position 1" in m.content, timeout=5)
    picture = render_image(50, 30, "png", 8)
    pictured = await discord_emu.slash(
        "generate",
        options={"prompt": "as a watercolour", "model": FLUX_DEV},
        attachments={"image": ("photo.png", picture)},
    )
    await pictured.wait_original(lambda m: "position 2" in m.content, timeout=5)
    await harness.restart()

    def prediction_for(prompt: str):
        """The newest prediction with ``prompt``, once there is one."""
        return lambda: next(
            (
                p
                for p in reversed(list(replicate_emu.predictions.values()))
                if p.input["prompt"] == prompt and (prompt == "blocker" or p.model == FLUX_DEV)
            ),
            None,
        )

    await replicate_emu.complete_prediction(
        (await replicate_emu.wait_for(prediction_for("blocker"))).id
    )
    variation = await replicate_emu.wait_for(prediction_for("a lighthouse"), timeout=10)
    assert (
        variation.model == FLUX_DEV and variation.images["image"].data == result.attachments[0][1]
    )
    await replicate_emu.complete_prediction(variation.id)
    from_picture = await replicate_emu.wait_for(prediction_for("as a watercolour"), timeout=10)
    assert from_picture.images["image"].data == picture
    await replicate_emu.complete_prediction(from_picture.id)

    def posted() -> list[str]:
        """The prompts of the results posted in the channel (after the restart, as
        ordinary messages)."""
        return [
            m.embeds[0]["description"]
            for m in discord_emu.messages(discord_emu.channel)
            if m.webhook_id is None and len(m.attachments) == 1 and m.embeds
        ]

    await discord_emu.wait_until(lambda: len(posted()) == 3, timeout=15)
    assert sorted(posted()) == ["a lighthouse", "as a watercolour", "blocker"]
