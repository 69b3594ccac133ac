"""services.generation.requests on its own: what a job asks for, planned from a model's
Cog schema (the emulator's documents), and the predictions built from it."""

from __future__ import annotations

import pytest

from services.errors import UserFacingError
from services.generation import ResolvedModel
from services.generation.requests import ImageSource, JobRequest, calls, plan
from services.model_inputs import ModelInputs
from tests.emulators.replicate import (
    DEV_SCHEMA,
    LORA_SCHEMA,
    SCHNELL_SCHEMA,
    UPSCALER_SCHEMA,
    CogInputs,
    cog_schema,
)

VERSION = "a" * 64
SOURCE = ImageSource(generation="parent", index=1)


def inputs(schema: dict, model: str, *, official: bool = True) -> ModelInputs:
    return ModelInputs.from_openapi(schema, model=model, version=VERSION, official=official)


SCHNELL = inputs(SCHNELL_SCHEMA, "black-forest-labs/flux-schnell")
DEV = inputs(DEV_SCHEMA, "black-forest-labs/flux-dev")
UPSCALER = inputs(UPSCALER_SCHEMA, "nightmareai/real-esrgan", official=False)
LORA = inputs(LORA_SCHEMA, f"me/dog:{VERSION}", official=False)


def request(model: str = "black-forest-labs/flux-schnell", **fields: object) -> JobRequest:
    return JobRequest(prompt="a fox", model=ResolvedModel(model), **fields)  # type: ignore[arg-type]


def test_a_plain_generation_sends_what_it_always_did() -> None:
    params = plan(request(count=3, seed=5), SCHNELL)
    [call] = calls("a fox", "black-forest-labs/flux-schnell", params, [])
    assert call.model == "black-forest-labs/flux-schnell"
    assert call.inputs == {
        "prompt": "a fox",
        "aspect_ratio": "1:1",
        "output_format": "png",
        "num_outputs": 3,
        "seed": 5,
    }


def test_a_job_stored_before_planning_gets_its_old_inputs() -> None:
    legacy = {"aspect_ratio": "16:9", "count": 2, "seed": 9}
    [call] = calls("a fox", "black-forest-labs/flux-schnell", legacy, [])
    assert call.inputs == {
        "prompt": "a fox",
        "aspect_ratio": "16:9",
        "num_outputs": 2,
        "seed": 9,
        "output_format": "png",
    }


def test_a_count_above_the_maximum_is_split_with_consecutive_seeds() -> None:
    schema = cog_schema(
        CogInputs()
        .add("prompt", "string", "p")
        .add("num_outputs", "integer", "n", default=1, minimum=1, maximum=3)
        .add("seed", "integer", "s"),
        ["prompt"],
        {"type": "array"},
    )
    params = plan(request("acme/three", count=4, seed=2**32 - 2), inputs(schema, "acme/three"))
    assert params["parts"] == [3, 1]
    built = calls("a fox", "acme/three", params, [])
    assert [(c.inputs["num_outputs"], c.inputs["seed"]) for c in built] == [(3, 4294967294), (1, 1)]
    assert all("aspect_ratio" not in c.inputs for c in built)


def test_a_model_without_a_count_input_runs_once_per_image() -> None:
    schema = cog_schema(CogInputs().add("prompt", "string", "p"), ["prompt"], {"type": "array"})
    params = plan(request("acme/one", count=2), inputs(schema, "acme/one"))
    built = calls("a fox", "acme/one", params, [])
    assert [c.inputs for c in built] == [{"prompt": "a fox"}] * 2
    assert params["seed"] is None


def test_an_input_image_goes_where_the_model_reads_it() -> None:
    params = plan(request("black-forest-labs/flux-dev", strength=0.4, sources=(SOURCE,)), DEV)
    [call] = calls("a fox", "black-forest-labs/flux-dev", params, ["https://x/y.png"])
    assert call.inputs["image"] == "https://x/y.png" and call.inputs["prompt_strength"] == 0.4
    assert params["sources"] == [{"generation": "parent", "index": 1}]


def test_an_upscale_runs_once_per_image_by_version_without_a_prompt() -> None:
    sources = (SOURCE, ImageSource(url="https://cdn/a.png"))
    params = plan(
        request("nightmareai/real-esrgan", kind="upscale", sources=sources),
        UPSCALER,
        upscale_scale=2,
    )
    built = calls("a fox", "nightmareai/real-esrgan", params, ["one", "two"])
    assert [c.model for c in built] == [f"nightmareai/real-esrgan:{VERSION}"] * 2
    assert [c.inputs for c in built] == [{"scale": 2, "image": "one"}, {"scale": 2, "image": "two"}]


@pytest.mark.parametrize(
    ("model_inputs", "fields", "words"),
    [
        (SCHNELL, {"sources": (SOURCE,)}, "does not take an input image"),
        (SCHNELL, {"lora_scale": 0.5}, "does not take lora_scale; it takes prompt"),
        (LORA, {"lora_scale": 4.0}, "lora_scale must be -1 to 3"),
        (DEV, {"strength": 0.5}, "only applies with an input image"),
        (UPSCALER, {}, "does not take a prompt"),
    ],
    ids=["image", "lora", "lora-range", "strength", "prompt"],
)
def test_what_does_not_fit_is_refused_with_what_would(
    model_inputs: ModelInputs, fields: dict, words: str
) -> None:
    with pytest.raises(UserFacingError) as refused:
        plan(request(model_inputs.model, **fields), model_inputs, image_models=["a/b"])
    assert words in refused.value.user_message


def test_a_model_that_takes_a_list_of_images_gets_a_list() -> None:
    schema = cog_schema(
        CogInputs().add("prompt", "string", "p"),
        ["prompt"],
        {"type": "array"},
    )
    schema["components"]["schemas"]["Input"]["properties"]["input_images"] = {
        "type": "array",
        "items": {"type": "string", "format": "uri"},
    }
    params = plan(request("acme/kontext", sources=(SOURCE,)), inputs(schema, "acme/kontext"))
    [call] = calls("a fox", "acme/kontext", params, ["https://x"])
    assert call.inputs["input_images"] == ["https://x"]
