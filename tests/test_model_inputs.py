"""services.model_inputs: reading Cog schemas, checking options, splitting counts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.model_inputs import ModelInputs, check_options, split_count
from tests.emulators.replicate.schemas import (
    ASPECT_RATIOS,
    DEV_SCHEMA,
    LORA_SCHEMA,
    SCHNELL_SCHEMA,
    TRAINER_SCHEMA,
    UPSCALER_SCHEMA,
    CogInputs,
    cog_schema,
)

SCHNELL = ModelInputs.from_openapi(
    SCHNELL_SCHEMA, model="black-forest-labs/flux-schnell", version="a" * 64, official=True
)
DEV = ModelInputs.from_openapi(DEV_SCHEMA, model="black-forest-labs/flux-dev", official=True)
UPSCALER = ModelInputs.from_openapi(
    UPSCALER_SCHEMA, model="nightmareai/real-esrgan", version="b" * 64, official=False
)
LORA = ModelInputs.from_openapi(LORA_SCHEMA, model=f"me/face:{'c' * 64}", version="c" * 64)


def schema_with(**props: dict[str, Any]) -> dict[str, Any]:
    """A Cog document with exactly these raw properties (and a list Output)."""
    doc = cog_schema(CogInputs(), [], {"type": "array", "items": {"type": "string"}})
    doc["components"]["schemas"]["Input"]["properties"] = props
    return doc


# ----------------------------------------------------------------------- reading


def test_flux_schnell() -> None:
    assert SCHNELL.names[:4] == ("prompt", "aspect_ratio", "num_outputs", "num_inference_steps")
    assert SCHNELL.takes_image is None and SCHNELL.strength_input is None
    assert SCHNELL.max_outputs == 4
    assert SCHNELL.aspect_ratios == tuple(ASPECT_RATIOS)
    assert not SCHNELL.has_lora_scale
    assert SCHNELL.get("prompt").required and not SCHNELL.get("seed").required
    steps = SCHNELL.get("num_inference_steps")
    assert (steps.type, steps.minimum, steps.maximum, steps.default) == ("integer", 1, 4, 4)
    fmt = SCHNELL.get("output_format")
    assert fmt.choices == ("webp", "jpg", "png") and fmt.default == "webp" and fmt.has_default
    assert SCHNELL.output_is_list
    assert SCHNELL.run_ref == "black-forest-labs/flux-schnell"  # official: by name


def test_flux_dev_and_trained_versions_take_an_image() -> None:
    assert DEV.takes_image == "image" and DEV.strength_input == "prompt_strength"
    assert DEV.get("image").is_file
    assert DEV.default("prompt_strength") == 0.8
    assert LORA.takes_image == "image"  # not "mask", though it is a file too
    assert LORA.has_lora_scale and LORA.default("lora_scale") == 1
    assert LORA.max_outputs == 4
    assert "custom" in LORA.aspect_ratios
    assert LORA.run_ref == LORA.model  # already a version


def test_upscaler() -> None:
    assert UPSCALER.takes_image == "image"
    assert UPSCALER.max_outputs == 1  # no count input
    assert not UPSCALER.output_is_list
    scale = UPSCALER.get("scale")
    assert (scale.minimum, scale.maximum, scale.default) == (0, 10, 4)
    assert UPSCALER.run_ref == f"nightmareai/real-esrgan:{'b' * 64}"  # community: by version


def test_trainer_has_no_image_input() -> None:
    trainer = ModelInputs.from_openapi(
        {
            "components": {
                "schemas": {"Input": TRAINER_SCHEMA["components"]["schemas"]["TrainingInput"]}
            }
        },
        model="ostris/flux-dev-lora-trainer",
    )
    assert trainer.takes_image is None  # input_images is a zip
    assert trainer.max_outputs == 1


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"input_image": {"type": "string", "format": "uri"}}, "input_image"),
        ({"img": {"type": "string", "format": "uri"}}, "img"),
        (
            {
                "mask": {"type": "string", "format": "uri"},
                "control_image": {"type": "string", "format": "uri"},
            },
            "control_image",
        ),
        (
            {"input_images": {"type": "array", "items": {"type": "string", "format": "uri"}}},
            "input_images",
        ),
        (
            {
                "input_images": {"type": "array", "items": {"type": "string", "format": "uri"}},
                "image_prompt": {"type": "string", "format": "uri"},
            },
            "image_prompt",
        ),
        ({"audio": {"type": "string", "format": "uri"}}, None),
        ({"image": {"type": "string"}}, None),  # text, not a file
    ],
)
def test_image_input_names(props: dict[str, Any], expected: str | None) -> None:
    assert ModelInputs.from_openapi(schema_with(**props), model="o/n").takes_image == expected


def test_other_shapes() -> None:
    inputs = ModelInputs.from_openapi(
        schema_with(
            num_images={"type": "integer", "minimum": 1, "x-order": 1},
            strength={"type": "number", "x-order": 0},
            seed={"anyOf": [{"type": "integer"}, {"type": "null"}], "x-order": 2},
            odd="not a dict",
        ),
        model="o/n",
    )
    assert inputs.names == ("strength", "num_images", "seed")
    assert inputs.outputs_input == "num_images" and inputs.max_outputs == 4  # no maximum
    assert inputs.strength_input == "strength"
    seed = inputs.get("seed")
    assert seed.type == "integer" and seed.nullable


@pytest.mark.parametrize("schema", [None, {}, {"components": []}, {"components": {"schemas": 1}}])
def test_missing_or_malformed_schema_reads_as_no_inputs(schema: Any) -> None:
    inputs = ModelInputs.from_openapi(schema, model="o/n")
    assert inputs.inputs == () and inputs.takes_image is None and inputs.max_outputs == 1
    assert [p.kind for p in check_options(inputs, {"seed": 1})] == ["unknown"]


def test_run_ref_when_nothing_is_known() -> None:
    assert ModelInputs(model="o/n").run_ref == "o/n"
    assert ModelInputs(model="o/n", version="d" * 64, official=None).run_ref == f"o/n:{'d' * 64}"


# ----------------------------------------------------------------------- checking


def test_what_the_bot_sends_fits() -> None:
    sent = {"aspect_ratio": "16:9", "num_outputs": 4, "seed": 7, "output_format": "png"}
    for model in (SCHNELL, DEV, LORA):
        assert check_options(model, {**sent, "prompt": "x"}, complete=True) == []
    assert check_options(DEV, {"image": "data:image/png;base64,AAAA", "prompt_strength": 0.6}) == []


def test_unknown_option_names_what_the_model_takes() -> None:
    [problem] = check_options(SCHNELL, {"lora_scale": 0.5})
    assert (problem.option, problem.kind) == ("lora_scale", "unknown")
    assert problem.message.startswith("black-forest-labs/flux-schnell does not take lora_scale;")
    assert "aspect_ratio" in (problem.allowed or "") and "num_outputs" in problem.message


def test_an_image_for_a_model_without_one() -> None:
    [problem] = check_options(SCHNELL, {"image": "https://x/y.png"})
    assert problem.kind == "no_image"
    assert problem.message == "black-forest-labs/flux-schnell does not take an input image."


@pytest.mark.parametrize(
    ("options", "kind", "allowed", "message"),
    [
        ({"num_outputs": 5}, "range", "1 to 4", "num_outputs must be 1 to 4"),
        ({"num_outputs": 0}, "range", "1 to 4", "(got 0)"),
        ({"num_outputs": 2.5}, "type", "a whole number", "must be a whole number"),
        ({"num_outputs": True}, "type", "a whole number", "(got True)"),
        ({"seed": "7"}, "type", "a whole number", "seed must be a whole number"),
        ({"go_fast": "yes"}, "type", "true or false", "go_fast must be true or false"),
        ({"aspect_ratio": "7:3"}, "choice", None, "aspect_ratio must be one of 1:1, 16:9"),
        ({"output_quality": -1}, "range", "0 to 100", "(got -1)"),
    ],
)
def test_values_out_of_range(
    options: dict[str, Any], kind: str, allowed: str | None, message: str
) -> None:
    [problem] = check_options(SCHNELL, options)
    assert problem.kind == kind
    if allowed is not None:
        assert problem.allowed == allowed
    assert message in problem.message
    assert "black-forest-labs/flux-schnell" in problem.message


def test_ranges_with_one_bound_and_floats() -> None:
    [problem] = check_options(LORA, {"lora_scale": 3.5})
    assert problem.allowed == "-1 to 3" and "(got 3.5)" in problem.message
    lone = ModelInputs.from_openapi(
        schema_with(n={"type": "number", "minimum": 0.5}, m={"type": "integer", "maximum": 9}),
        model="o/n",
    )
    assert [p.allowed for p in check_options(lone, {"n": 0.25, "m": 10})] == [
        "at least 0.5",
        "at most 9",
    ]
    assert check_options(lone, {"n": 7, "m": 9.0}) == []


def test_files_must_be_links_and_none_is_skipped() -> None:
    [problem] = check_options(DEV, {"image": b"\x89PNG"})
    assert problem.kind == "type" and "link or a data URI" in problem.message
    assert check_options(DEV, {"image": None, "seed": None}) == []


def test_missing_required_only_when_complete() -> None:
    assert check_options(UPSCALER, {"scale": 2}) == []
    [problem] = check_options(UPSCALER, {"scale": 2}, complete=True)
    assert (problem.option, problem.kind) == ("image", "missing")
    assert problem.message == "nightmareai/real-esrgan needs image."


# ----------------------------------------------------------------------- splitting


@pytest.mark.parametrize(
    ("count", "most", "expected"),
    [(4, 1, [1, 1, 1, 1]), (4, 4, [4]), (6, 4, [4, 2]), (1, 4, [1]), (3, 0, [1, 1, 1])],
)
def test_split_count(count: int, most: int, expected: list[int]) -> None:
    assert split_count(count, most) == expected


def test_split_count_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_count(0, 4)


@given(count=st.integers(1, 200), most=st.integers(1, 10))
def test_split_count_adds_up(count: int, most: int) -> None:
    parts = split_count(count, most)
    assert sum(parts) == count
    assert all(1 <= p <= most for p in parts)
    assert len(parts) == -(-count // most)
