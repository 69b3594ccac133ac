"""The emulator's models: their Cog schemas, Replicate's 422 for inputs that do not fit,
file inputs (data URIs, uploads, URLs) and the upscaler, driven by the real client."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import replicate
from aiohttp import web
from PIL import Image
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

from tests.emulators.replicate import (
    ASPECT_RATIOS,
    FLUX_DEV,
    FLUX_SCHNELL,
    TRAINER_MODEL,
    TRAINER_VERSION_ID,
    UPSCALER_MODEL,
    UPSCALER_VERSION,
    UPSCALER_VERSION_ID,
    ReplicateEmulator,
)
from tests.emulators.replicate.validation import resolve


@pytest.fixture
async def client(replicate_emu: ReplicateEmulator) -> AsyncIterator[replicate.Client]:
    transport = httpx.AsyncHTTPTransport()
    client = replicate.Client(
        api_token=replicate_emu.token, base_url=replicate_emu.base_url, transport=transport
    )
    client.poll_interval = 0.02
    yield client
    await transport.aclose()


def png(size: tuple[int, int] = (40, 20), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


async def raw_create(emu: ReplicateEmulator, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        return await http.post(path, json=body, headers={"Authorization": f"Bearer {emu.token}"})


def inputs_of(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each input with its allOf $ref (Cog's choices) resolved."""
    props = schema["components"]["schemas"]["Input"]["properties"]
    return {name: resolve(schema, prop) for name, prop in props.items()}


# ----------------------------------------------------------------------- schemas


async def test_official_models_publish_cog_schemas(client: replicate.Client):
    schnell = await client.models.async_get(FLUX_SCHNELL)
    assert schnell.latest_version is not None
    schema = schnell.latest_version.openapi_schema
    raw = schema["components"]["schemas"]["Input"]["properties"]
    assert raw["aspect_ratio"]["allOf"] == [{"$ref": "#/components/schemas/aspect_ratio"}]
    assert schema["components"]["schemas"]["aspect_ratio"]["description"] == "An enumeration."
    inputs = inputs_of(schema)
    assert inputs["aspect_ratio"]["enum"] == ASPECT_RATIOS
    assert (inputs["num_outputs"]["minimum"], inputs["num_outputs"]["maximum"]) == (1, 4)
    assert "image" not in inputs and "prompt_strength" not in inputs
    assert {"go_fast", "megapixels", "num_inference_steps", "output_quality"} <= set(inputs)
    assert [name for name, _ in sorted(raw.items(), key=lambda kv: kv[1]["x-order"])][:3] == [
        "prompt",
        "aspect_ratio",
        "num_outputs",
    ]
    assert schema["components"]["schemas"]["Input"]["required"] == ["prompt"]

    dev = inputs_of((await client.models.async_get(FLUX_DEV)).latest_version.openapi_schema)
    assert dev["image"]["format"] == "uri"
    assert (dev["prompt_strength"]["minimum"], dev["prompt_strength"]["maximum"]) == (0, 1)
    assert dev["num_outputs"]["maximum"] == 4


async def test_upscaler_schema_and_versions(client: replicate.Client):
    model = await client.models.async_get(UPSCALER_MODEL)
    assert model.latest_version is not None and model.latest_version.id == UPSCALER_VERSION_ID
    schema = model.latest_version.openapi_schema
    inputs = inputs_of(schema)
    assert list(inputs) == ["image", "scale", "face_enhance"]
    assert (inputs["scale"]["minimum"], inputs["scale"]["maximum"], inputs["scale"]["default"]) == (
        0,
        10,
        4,
    )
    assert schema["components"]["schemas"]["Output"]["type"] == "string"
    versions = await model.versions.async_list()
    assert [v.id for v in versions.results] == [UPSCALER_VERSION_ID]
    version = await model.versions.async_get(UPSCALER_VERSION_ID)
    assert version.openapi_schema == schema


async def test_trained_versions_take_lora_scale_and_an_image(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    model = replicate_emu.add_model(replicate_emu.username, "face", with_version=True)
    fetched = await client.models.async_get(model.ref)
    inputs = inputs_of(fetched.latest_version.openapi_schema)
    assert {"image", "prompt_strength", "lora_scale", "num_outputs"} <= set(inputs)
    assert inputs["num_outputs"]["maximum"] == 4
    assert inputs["lora_scale"]["default"] == 1


# ----------------------------------------------------------------------- 422


@pytest.mark.parametrize(
    ("extra", "kind", "field", "description"),
    [
        ({"lora_scale": 0.5}, "additional_property_not_allowed", "input", "lora_scale"),
        ({"num_outputs": 5}, "number_lte", "input.num_outputs", "less than or equal to 4"),
        ({"num_outputs": 0}, "number_gte", "input.num_outputs", "greater than or equal to 1"),
        ({"aspect_ratio": "7:3"}, "enum", "input.aspect_ratio", '"1:1", "16:9"'),
        ({"seed": "42"}, "invalid_type", "input.seed", "Expected: integer, given: string"),
        ({"go_fast": 1}, "invalid_type", "input.go_fast", "Expected: boolean"),
    ],
)
async def test_inputs_that_do_not_fit_are_a_422(
    replicate_emu: ReplicateEmulator, extra: dict, kind: str, field: str, description: str
):
    resp = await raw_create(
        replicate_emu,
        f"/v1/models/{FLUX_SCHNELL}/predictions",
        {"input": {"prompt": "x", **extra}},
    )
    assert resp.status_code == 422
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = resp.json()
    assert body["title"] == "Input validation failed"
    [invalid] = body["invalid_fields"]
    assert (invalid["type"], invalid["field"]) == (kind, field)
    assert description in invalid["description"]
    assert body["detail"] == f"- {field}: {invalid['description']}\n"
    assert replicate_emu.counts["predictions_created"] == 0


async def test_missing_prompt_and_bad_uri(replicate_emu: ReplicateEmulator):
    resp = await raw_create(
        replicate_emu, f"/v1/models/{FLUX_DEV}/predictions", {"input": {"image": "not a uri"}}
    )
    body = resp.json()
    assert resp.status_code == 422
    assert body["detail"] == (
        "- input: prompt is required\n- input.image: Does not match format 'uri'\n"
    )


async def test_client_sees_the_422_detail(client: replicate.Client):
    with pytest.raises(ReplicateError) as info:
        await client.models.predictions.async_create(
            model=FLUX_SCHNELL, input={"prompt": "x", "image": data_uri(png())}
        )
    assert info.value.status == 422
    assert "Additional property image is not allowed" in (info.value.detail or "")


async def test_unknown_inputs_can_be_ignored_as_replicate_does(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    replicate_emu.unknown_inputs = "ignore"
    prediction = await client.models.predictions.async_create(
        model=FLUX_SCHNELL, input={"prompt": "x", "lora_scale": 0.5}, wait=5
    )
    assert prediction.status == "succeeded"
    assert prediction.input["lora_scale"] == 0.5


@pytest.mark.parametrize("model", [FLUX_SCHNELL, FLUX_DEV, "trained"])
async def test_what_the_bot_sends_fits_every_model(
    client: replicate.Client, replicate_emu: ReplicateEmulator, model: str
):
    sent = {"prompt": "x", "aspect_ratio": "16:9", "num_outputs": 4, "seed": 7}
    sent["output_format"] = "png"
    if model == "trained":
        trained = replicate_emu.add_model(replicate_emu.username, "lora", with_version=True)
        prediction = await client.predictions.async_create(
            version=trained.latest_version.id, input=sent, wait=5
        )
    else:
        prediction = await client.models.predictions.async_create(model=model, input=sent, wait=5)
    assert prediction.status == "succeeded" and len(prediction.output) == 4


async def test_official_model_by_name_on_the_predictions_route(client: replicate.Client):
    """Since August 2025 POST /v1/predictions also takes owner/name of an official model."""
    prediction = await client.predictions.async_create(
        version=FLUX_SCHNELL, input={"prompt": "x"}, wait=5
    )
    assert prediction.status == "succeeded"


async def test_community_models_are_not_run_by_name(replicate_emu: ReplicateEmulator):
    resp = await raw_create(
        replicate_emu, f"/v1/models/{UPSCALER_MODEL}/predictions", {"input": {"image": "x:y"}}
    )
    assert resp.status_code == 404
    resp = await raw_create(
        replicate_emu, "/v1/predictions", {"version": UPSCALER_MODEL, "input": {}}
    )
    assert resp.status_code == 422
    assert resp.json()["title"] == "Invalid version or not permitted"


async def test_trainer_inputs(client: replicate.Client, replicate_emu: ReplicateEmulator):
    replicate_emu.add_model(replicate_emu.username, "dest")
    with pytest.raises(ReplicateError) as info:
        await client.trainings.async_create(
            TRAINER_MODEL,
            TRAINER_VERSION_ID,
            {"input_images": "https://example.com/a.zip", "steps": 2},
            destination=f"{replicate_emu.username}/dest",
        )
    assert "input.steps: Must be greater than or equal to 3" in (info.value.detail or "")


# ----------------------------------------------------------------------- file inputs


async def test_image_as_data_uri_is_received_and_shapes_the_output(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    image = png((80, 40))
    prediction = await client.models.predictions.async_create(
        model=FLUX_DEV,
        input={"prompt": "x", "image": data_uri(image), "prompt_strength": 0.6},
        wait=5,
    )
    assert prediction.status == "succeeded"
    assert replicate_emu.received_image(prediction.id) == image
    [received] = replicate_emu.received_images
    assert (received.input, received.source, received.content_type) == (
        "image",
        "data",
        "image/png",
    )
    assert received.url == "data:image/png;base64,..."
    out = await FileOutput(prediction.output[0], client).aread()
    width, height = size_of(out)
    assert abs(width / height - 2) < 0.2


async def test_image_uploaded_through_the_files_api(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    """The client uploads a file object given as an input and sends the file's URL."""
    image = png((30, 30), (0, 0, 255))
    trained = replicate_emu.add_model(replicate_emu.username, "lora", with_version=True)
    output = await client.async_run(
        f"{trained.ref}:{trained.latest_version.id}",
        input={"prompt": "TOK", "image": io.BytesIO(image)},
        wait=False,
    )
    assert len(output) == 1
    assert replicate_emu.counts["files_created"] == 1
    [received] = replicate_emu.received_images
    assert received.source == "file" and received.data == image


async def test_an_output_used_as_the_next_input(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    first = await client.models.predictions.async_create(
        model=FLUX_SCHNELL, input={"prompt": "x", "num_outputs": 2}, wait=5
    )
    second_image = await FileOutput(first.output[1], client).aread()
    vary = await client.models.predictions.async_create(
        model=FLUX_DEV, input={"prompt": "x", "image": first.output[1]}, wait=5
    )
    assert vary.status == "succeeded"
    assert replicate_emu.received_image(vary.id, "image") == second_image
    assert replicate_emu.received_images[-1].source == "output"


@pytest.fixture
async def image_host() -> AsyncIterator[str]:
    """A server of its own for the images a test gives as URLs."""

    async def serve(request: web.Request) -> web.Response:
        if request.match_info["name"] == "cat.png":
            return web.Response(body=png((16, 32)), content_type="image/png")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_image_url_is_fetched(
    client: replicate.Client, replicate_emu: ReplicateEmulator, image_host: str
):
    prediction = await client.models.predictions.async_create(
        model=FLUX_DEV, input={"prompt": "x", "image": f"{image_host}/cat.png"}, wait=5
    )
    assert prediction.status == "succeeded"
    assert replicate_emu.received_image() == png((16, 32))
    assert replicate_emu.received_images[0].source == "url"


async def test_unreadable_images_fail_the_prediction(
    client: replicate.Client, replicate_emu: ReplicateEmulator, image_host: str
):
    gone = await client.models.predictions.async_create(
        model=FLUX_DEV, input={"prompt": "x", "image": f"{image_host}/gone.png"}, wait=5
    )
    assert gone.status == "failed" and "HTTP 404" in (gone.error or "")
    broken = await client.models.predictions.async_create(
        model=FLUX_DEV, input={"prompt": "x", "image": "data:image/png;base64,@@@"}, wait=5
    )
    assert broken.status == "failed" and "base64" in (broken.error or "")
    not_image = await client.models.predictions.async_create(
        model=FLUX_DEV, input={"prompt": "x", "image": data_uri(b"hello", "text/plain")}, wait=5
    )
    assert not_image.status == "failed" and "cannot identify image file" in (not_image.error or "")
    assert [r.error is not None for r in replicate_emu.received_images] == [True, True, False]


# ----------------------------------------------------------------------- upscaler


@pytest.mark.parametrize(("scale", "factor"), [(2, 2), (None, 4)])
async def test_upscaler_returns_one_bigger_image(
    client: replicate.Client,
    replicate_emu: ReplicateEmulator,
    scale: int | None,
    factor: int,
):
    image = png((24, 16))
    inputs: dict[str, Any] = {"image": data_uri(image)}
    if scale is not None:
        inputs["scale"] = scale
    output = await client.async_run(UPSCALER_VERSION, input=inputs, wait=False)
    assert isinstance(output, FileOutput)  # one URI, not a list
    data = await output.aread()
    assert size_of(data) == (24 * factor, 16 * factor)
    assert data.startswith(b"\x89PNG")
    prediction = replicate_emu.last_prediction
    assert prediction is not None and prediction.version == UPSCALER_VERSION_ID


async def test_upscaler_failures(client: replicate.Client, replicate_emu: ReplicateEmulator):
    with pytest.raises(ModelError, match="cannot identify image file"):
        await client.async_run(
            UPSCALER_VERSION, input={"image": data_uri(b"nope", "image/png")}, wait=False
        )
    with pytest.raises(ReplicateError) as info:
        await client.async_run(UPSCALER_VERSION, input={"scale": 2}, wait=False)
    assert info.value.status == 422 and "image is required" in (info.value.detail or "")
