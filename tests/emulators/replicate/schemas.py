"""The OpenAPI documents Cog publishes for each model version the emulator knows.

Shaped as Cog writes them (``GET /v1/models/{owner}/{name}`` returns one as
``latest_version.openapi_schema``): the inputs are ``components.schemas.Input`` (or
``TrainingInput``), one property per input with its ``type``, ``title``, ``x-order``,
``description`` and, where the model says so, ``default``, ``minimum``/``maximum`` and
``format: uri`` for files; a ``choices`` input is an ``allOf`` with one ``$ref`` to an
enum schema of its own (``"description": "An enumeration."``), as Cog does. ``Output``
is a list of URIs for the image models and one URI for the upscaler.

The inputs follow the real models' pages on Replicate: black-forest-labs/flux-schnell
and flux-dev, nightmareai/real-esrgan, ostris/flux-dev-lora-trainer and the versions it
pushes (a "fine-tuned FLUX.1 model"); descriptions are shortened.
"""

from __future__ import annotations

import copy
from typing import Any

ASPECT_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]
FORMATS = {
    "webp": ("WEBP", "image/webp"),
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}
_UNSET: Any = object()


class CogInputs:
    """Builds ``Input`` properties in the order they are added (their ``x-order``)."""

    def __init__(self) -> None:
        self.properties: dict[str, dict[str, Any]] = {}
        self.enums: dict[str, dict[str, Any]] = {}

    def add(
        self,
        name: str,
        type_: str,
        description: str,
        *,
        default: Any = _UNSET,
        minimum: float | None = None,
        maximum: float | None = None,
        uri: bool = False,
    ) -> CogInputs:
        prop: dict[str, Any] = {"type": type_, "title": name.replace("_", " ").title()}
        if uri:
            prop["format"] = "uri"
        if default is not _UNSET:
            prop["default"] = default
        if maximum is not None:
            prop["maximum"] = maximum
        if minimum is not None:
            prop["minimum"] = minimum
        prop["x-order"] = len(self.properties)
        prop["description"] = description
        self.properties[name] = prop
        return self

    def choice(self, name: str, choices: list[Any], description: str, default: Any) -> CogInputs:
        kind = "integer" if all(isinstance(c, int) for c in choices) else "string"
        self.enums[name] = {
            "enum": list(choices),
            "type": kind,
            "title": name,
            "description": "An enumeration.",
        }
        self.properties[name] = {
            "allOf": [{"$ref": f"#/components/schemas/{name}"}],
            "default": default,
            "x-order": len(self.properties),
            "description": description,
        }
        return self


def cog_schema(
    inputs: CogInputs, required: list[str], output: dict[str, Any], *, training: bool = False
) -> dict[str, Any]:
    """A trimmed version of the OpenAPI document Cog publishes for a model version."""
    name = "TrainingInput" if training else "Input"
    out_name = "TrainingOutput" if training else "Output"
    schemas: dict[str, Any] = {
        name: {
            "type": "object",
            "title": name,
            "required": required,
            "properties": inputs.properties,
        },
        out_name: {**output, "title": out_name},
        "Status": {
            "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
            "type": "string",
            "title": "Status",
            "description": "An enumeration.",
        },
        **inputs.enums,
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": schemas},
    }


def input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``Input`` (or ``TrainingInput``) object schema of a version's document."""
    schemas = schema["components"]["schemas"]
    return schemas.get("Input") or schemas["TrainingInput"]


_IMAGE_LIST = {"type": "array", "items": {"type": "string", "format": "uri"}}
_ONE_URI = {"type": "string", "format": "uri"}
_PROMPT = "Prompt for generated image"
_SEED = "Random seed. Set for reproducible generation"
_QUALITY = (
    "Quality when saving the output images, from 0 to 100. 100 is best quality, 0 is "
    "lowest quality. Not relevant for .png outputs"
)
_IMAGE = (
    "Input image for image to image mode. The aspect ratio of your output will match this image"
)
_STRENGTH = (
    "Prompt strength when using img2img. 1.0 corresponds to full destruction of information "
    "in image"
)
_GO_FAST = (
    "Run faster predictions with model optimized for speed (currently fp8 quantized); "
    "disable to run in original bf16"
)


def _tail(inputs: CogInputs, *, go_fast: bool = True) -> CogInputs:
    """The output and speed options every FLUX model here ends with."""
    return (
        inputs.add("seed", "integer", _SEED)
        .choice("output_format", list(FORMATS), "Format of the output images", "webp")
        .add("output_quality", "integer", _QUALITY, default=80, minimum=0, maximum=100)
        .add(
            "disable_safety_checker",
            "boolean",
            "Disable safety checker for generated images.",
            default=False,
        )
        .add("go_fast", "boolean", _GO_FAST, default=go_fast)
        .choice(
            "megapixels",
            ["1", "0.25"],
            "Approximate number of megapixels for generated image",
            "1",
        )
    )


def schnell_schema() -> dict[str, Any]:
    inputs = (
        CogInputs()
        .add("prompt", "string", _PROMPT)
        .choice("aspect_ratio", ASPECT_RATIOS, "Aspect ratio for the generated image", "1:1")
        .add(
            "num_outputs",
            "integer",
            "Number of outputs to generate",
            default=1,
            minimum=1,
            maximum=4,
        )
        .add(
            "num_inference_steps",
            "integer",
            "Number of denoising steps. 4 is recommended, and lower number of steps produce "
            "lower quality outputs, faster.",
            default=4,
            minimum=1,
            maximum=4,
        )
    )
    return cog_schema(_tail(inputs), ["prompt"], _IMAGE_LIST)


def dev_schema() -> dict[str, Any]:
    inputs = (
        CogInputs()
        .add("prompt", "string", _PROMPT)
        .choice("aspect_ratio", ASPECT_RATIOS, "Aspect ratio for the generated image", "1:1")
        .add("image", "string", _IMAGE, uri=True)
        .add("prompt_strength", "number", _STRENGTH, default=0.8, minimum=0, maximum=1)
        .add(
            "num_outputs",
            "integer",
            "Number of outputs to generate",
            default=1,
            minimum=1,
            maximum=4,
        )
        .add(
            "num_inference_steps",
            "integer",
            "Number of denoising steps. Recommended range is 28-50, and lower number of "
            "steps produce lower quality outputs, faster.",
            default=28,
            minimum=1,
            maximum=50,
        )
        .add(
            "guidance",
            "number",
            "Guidance for generated image",
            default=3,
            minimum=0,
            maximum=10,
        )
    )
    return cog_schema(_tail(inputs), ["prompt"], _IMAGE_LIST)


def lora_schema() -> dict[str, Any]:
    """What a version pushed by ostris/flux-dev-lora-trainer takes."""
    inputs = (
        CogInputs()
        .add(
            "prompt",
            "string",
            "Prompt for generated image. If you include the `trigger_word` used in the "
            "training process you are more likely to activate the trained object, style, "
            "or concept in the resulting image.",
        )
        .add("image", "string", _IMAGE, uri=True)
        .add("mask", "string", "Image mask for image inpainting mode.", uri=True)
        .choice(
            "aspect_ratio",
            [*ASPECT_RATIOS, "custom"],
            "Aspect ratio for the generated image. If custom is selected, uses height and "
            "width below & will run in bf16 mode",
            "1:1",
        )
        .add("height", "integer", "Height of generated image.", minimum=256, maximum=1440)
        .add("width", "integer", "Width of generated image.", minimum=256, maximum=1440)
        .add("prompt_strength", "number", _STRENGTH, default=0.8, minimum=0, maximum=1)
        .choice(
            "model",
            ["dev", "schnell"],
            "Which model to run inference with. The dev model performs best with around 28 "
            "inference steps but the schnell model only needs 4 steps.",
            "dev",
        )
        .add(
            "num_outputs",
            "integer",
            "Number of outputs to generate",
            default=1,
            minimum=1,
            maximum=4,
        )
        .add(
            "lora_scale",
            "number",
            "Determines how strongly the main LoRA should be applied. Sane results between "
            "0 and 1 for base inference.",
            default=1,
            minimum=-1,
            maximum=3,
        )
        .add(
            "num_inference_steps",
            "integer",
            "Number of denoising steps. More steps can give more detailed images, but take longer.",
            default=28,
            minimum=1,
            maximum=50,
        )
        .add(
            "guidance_scale",
            "number",
            "Guidance scale for the diffusion process.",
            default=3,
            minimum=0,
            maximum=10,
        )
    )
    _tail(inputs, go_fast=False)
    inputs.add(
        "extra_lora",
        "string",
        "Load LoRA weights. Supports Replicate models in the format <owner>/<username> or "
        "<owner>/<username>/<version>, HuggingFace URLs, CivitAI URLs, or arbitrary "
        ".safetensors URLs from the Internet.",
    ).add(
        "extra_lora_scale",
        "number",
        "Determines how strongly the extra LoRA should be applied.",
        default=1,
        minimum=-1,
        maximum=3,
    )
    return cog_schema(inputs, ["prompt"], _IMAGE_LIST)


def upscaler_schema() -> dict[str, Any]:
    """nightmareai/real-esrgan: one image in, one image out."""
    inputs = (
        CogInputs()
        .add("image", "string", "Input image", uri=True)
        .add("scale", "number", "Factor to scale image by", default=4, minimum=0, maximum=10)
        .add(
            "face_enhance",
            "boolean",
            "Run GFPGAN face enhancement along with upscaling",
            default=False,
        )
    )
    return cog_schema(inputs, ["image"], _ONE_URI)


def trainer_schema() -> dict[str, Any]:
    inputs = (
        CogInputs()
        .add(
            "input_images",
            "string",
            "A zip file containing the images that will be used for training.",
            uri=True,
        )
        .add(
            "trigger_word",
            "string",
            "The trigger word refers to the object, style or concept you are training on.",
            default="TOK",
        )
        .add("autocaption", "boolean", "Automatically caption images", default=True)
        .add("autocaption_prefix", "string", "Optional: Text you want to appear at the start")
        .add("autocaption_suffix", "string", "Optional: Text you want to appear at the end")
        .add(
            "steps",
            "integer",
            "Number of training steps. Recommended range 500-4000",
            default=1000,
            minimum=3,
            maximum=6000,
        )
        .add("lora_rank", "integer", "Higher ranks take longer to train", default=16, minimum=1)
        .add("learning_rate", "number", "Learning rate", default=0.0004)
        .add("batch_size", "integer", "Batch size", default=1, minimum=1)
        .add(
            "resolution",
            "string",
            "Image resolutions for training",
            default="512,768,1024",
        )
        .add(
            "caption_dropout_rate",
            "number",
            "Advanced setting. Determines how often a caption is ignored.",
            default=0.05,
            minimum=0,
            maximum=1,
        )
        .add("optimizer", "string", "Optimizer to use for training", default="adamw8bit")
    )
    output = {
        "type": "object",
        "properties": {"version": {"type": "string"}, "weights": _ONE_URI},
    }
    return cog_schema(inputs, ["input_images"], output, training=True)


SCHNELL_SCHEMA = schnell_schema()
DEV_SCHEMA = dev_schema()
LORA_SCHEMA = lora_schema()
UPSCALER_SCHEMA = upscaler_schema()
TRAINER_SCHEMA = trainer_schema()


def fresh(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy a version can own (so a test changing one version changes no other)."""
    return copy.deepcopy(schema)
