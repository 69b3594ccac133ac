"""The HTTP API with images: ``POST /image/generate`` with an input image and
``POST /image/upscale``, end to end against the Replicate emulator, every answer checked
against ``api/openapi.json``."""

from __future__ import annotations

import base64
import io

import aiohttp
from PIL import Image

from services.store import Generation
from tests.emulators.replicate import (
    FLUX_DEV,
    FLUX_SCHNELL,
    UPSCALER_MODEL,
    ReplicateEmulator,
    render_image,
    render_large_png,
)
from tests.test_http_api import Answer, Api, ApiServer

MODELS = f"{FLUX_SCHNELL},{FLUX_DEV}"


def data_uri(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def form(image: bytes | None, filename: str = "photo.png", **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, value)
    if image is not None:
        data.add_field("image", image, filename=filename, content_type="image/png")
    return data


async def upscale(api: Api, image: bytes, **kwargs: object) -> Answer:
    return await api.call("POST", "/image/upscale", data=form(image), **kwargs)  # type: ignore[arg-type]


async def stored(server: ApiServer, answer: Answer) -> Generation:
    generation = await server.services.store.get_generation(answer.headers["X-Generation-Id"])
    assert generation is not None
    return generation


async def test_generate_with_an_image_as_a_data_uri(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(GENERATE_MODELS=MODELS)
    picture = render_image(96, 64, "png", 3)
    answer = await api.generate(
        prompt="as a mosaic", model=FLUX_DEV, image=data_uri(picture), strength=0.3
    )
    assert answer.status == 200, answer.body[:300]
    job = replicate_emu.last_prediction
    assert job.images["image"].data == picture and job.input["prompt_strength"] == 0.3
    record = await stored(server, answer)
    assert record.source == "api" and record.params["strength"] == 0.3


async def test_generate_with_an_image_as_a_multipart_part(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(GENERATE_MODELS=MODELS)
    picture = render_image(64, 64, "png", 4)
    body = form(picture, prompt="as a mosaic", model=FLUX_DEV, strength="0.5", seed="42")
    answer = await api.call("POST", "/image/generate", data=body)
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["X-Seed"] == "42"
    job = replicate_emu.last_prediction
    assert job.images["image"].data == picture
    assert job.input["prompt_strength"] == 0.5 and job.input["seed"] == 42


async def test_generate_with_an_image_for_a_model_without_image_input_is_refused(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(GENERATE_MODELS=MODELS)
    answer = await api.generate(prompt="x", image=data_uri(render_image(8, 8, "png", 1)))
    assert answer.status == 422
    assert "does not take an input image" in answer.detail and FLUX_DEV in answer.detail
    assert replicate_emu.counts["predictions_created"] == 0


async def test_generate_with_something_that_is_no_image_is_refused(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(GENERATE_MODELS=MODELS)
    text = data_uri(b"hello, not a picture", "text/plain")
    answer = await api.generate(prompt="x", model=FLUX_DEV, image=text)
    assert answer.status == 422 and "not an image" in answer.detail
    broken = await api.generate(prompt="x", model=FLUX_DEV, image="data:image/png;base64,@@")
    assert broken.status == 422
    assert replicate_emu.counts["predictions_created"] == 0
    assert replicate_emu.counts["files_created"] == 0


async def test_upscale_answers_the_upscaled_image(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start()
    picture = render_image(48, 32, "png", 9)
    answer = await upscale(api, picture)
    assert answer.status == 200, answer.body[:300]
    assert answer.content_type == "image/png"
    assert size_of(answer.body) == (96, 64)
    job = replicate_emu.last_prediction
    assert job.model == UPSCALER_MODEL and job.images["image"].data == picture
    assert job.input["scale"] == 2
    record = await stored(server, answer)
    assert record.params["kind"] == "upscale" and record.status == "succeeded"
    assert answer.headers["X-Prediction-Id"] == job.id


async def test_upscale_takes_a_data_uri_too(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(UPSCALE_SCALE="4")
    picture = render_image(20, 10, "png", 2)
    answer = await api.call("POST", "/image/upscale", json_body={"image": data_uri(picture)})
    assert answer.status == 200 and size_of(answer.body) == (80, 40)


async def test_upscale_refusals_spend_nothing(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(MAX_INPUT_IMAGE_MB="1", GENERATIONS_PER_USER_PER_DAY="1")
    missing = await api.call("POST", "/image/upscale", json_body={})
    assert missing.status == 422 and "image" in missing.detail
    not_image = await upscale(api, b"GIF89a but not really")
    assert not_image.status == 422
    too_big = await upscale(api, render_large_png(2 * 1024 * 1024))
    assert too_big.status == 413
    unknown = await api.call("POST", "/image/upscale", json_body={"image": "x", "scale": 8})
    assert unknown.status == 422 and "scale" in unknown.detail
    no_token = await upscale(api, render_image(8, 8, "png", 1), token=None)
    assert no_token.status == 401
    assert replicate_emu.counts["predictions_created"] == 0
    first = await upscale(api, render_image(8, 8, "png", 1))
    assert first.status == 200
    quota = await upscale(api, render_image(8, 8, "png", 1))
    assert quota.status == 429 and "for today" in quota.detail
    assert replicate_emu.counts["predictions_created"] == 1
