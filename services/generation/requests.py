"""What a job asks Replicate for: planned when the job is admitted, from what the model
takes (its Cog schema, :mod:`services.model_inputs`), and turned into predictions when
it runs, wherever that is.

Kinds of job (``params["kind"]``):

- ``generate``: a prompt, maybe with an input image (a user's picture) and its strength;
  a Remix is a ``generate`` (or ``vary``) with the prompt edited;
- ``vary``: variations of a generated image: its prompt, a new seed, the image as input
  with ``VARY_STRENGTH``, on ``VARY_MODEL`` or on the trained model that made it;
- ``upscale``: one prediction per input image on ``UPSCALE_MODEL``.

Every option is checked against the model before the job is admitted: Replicate drops an
input a model does not declare without a word, so an option the model does not take is
refused here, naming what it takes. A count above what one prediction of the model can
make becomes several predictions (``params["parts"]``). Everything the run needs is
stored in the job's ``params`` (JSON), so that another process can run it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from services.errors import UserFacingError
from services.generation.jobs import MAX_SEED
from services.generation.models import ResolvedModel
from services.input_images import InputImage
from services.model_inputs import ModelInputs, check_options, split_count

KINDS: Final = ("generate", "vary", "upscale")
#: Stands in for the input image while the options are checked (any link fits).
_IMAGE_PLACEHOLDER: Final = "https://replicate.invalid/input.png"


@dataclass(frozen=True)
class ImageSource:
    """Where an input image comes from, as stored in ``params["sources"]``.

    A generated image is ``generation`` (the job that made it) and ``index``; any other
    image is a ``url`` (a Discord attachment, say) with, when known, the message that
    carries it (``channel_id``, ``message_id``, ``attachment_id``) to find a fresh link
    when the first has expired."""

    generation: str | None = None
    index: int = 0
    url: str | None = None
    channel_id: int | None = None
    message_id: int | None = None
    attachment_id: int | None = None
    filename: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageSource:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class JobRequest:
    """What a front end asks for. ``aspect_ratio`` None: the model's default.
    ``images``: the sources' images, already checked, when the front end has them."""

    prompt: str
    model: ResolvedModel
    kind: str = "generate"
    aspect_ratio: str | None = None
    count: int = 1
    seed: int | None = None
    strength: float | None = None
    lora_scale: float | None = None
    sources: tuple[ImageSource, ...] = ()
    images: tuple[InputImage, ...] = field(default=(), repr=False)
    parent: str | None = None


@dataclass(frozen=True)
class Call:
    """One prediction of a job: the model reference to run and its inputs."""

    model: str
    inputs: dict[str, Any]


def plan(
    request: JobRequest,
    inputs: ModelInputs,
    *,
    image_models: Sequence[str] = (),
    upscale_scale: float | None = None,
) -> dict[str, Any]:
    """The job's ``params``: what to send, checked against ``inputs`` (what the model
    takes). Raises :class:`UserFacingError` naming every option that does not fit.
    ``image_models``: the offered models that take an input image, named when this one
    does not."""
    if request.kind not in KINDS:
        raise ValueError(f"unknown kind of job {request.kind!r}")
    model = request.model.ref
    image_input = inputs.takes_image
    if request.sources and image_input is None:
        raise UserFacingError(no_image(model, request.kind, image_models))
    if request.strength is not None and not request.sources:
        raise UserFacingError("Strength only applies with an input image.")
    if request.kind != "upscale" and "prompt" not in inputs:
        raise UserFacingError(f"`{model}` does not take a prompt; it takes {_names(inputs)}.")
    fixed: dict[str, Any] = {}
    checked: dict[str, Any] = {}
    seed: int | None = None
    if request.kind == "upscale":
        if upscale_scale is not None and "scale" in inputs:
            fixed["scale"] = upscale_scale
        parts = [1] * len(request.sources)
        outputs_input = None
    else:
        checked["prompt"] = request.prompt
        if request.aspect_ratio is not None:
            fixed["aspect_ratio"] = request.aspect_ratio
        elif "aspect_ratio" in inputs and "1:1" in inputs.aspect_ratios:
            fixed["aspect_ratio"] = "1:1"
        output_format = inputs.get("output_format")
        if output_format is not None and (
            output_format.choices is None or "png" in output_format.choices
        ):
            fixed["output_format"] = "png"
        if request.strength is not None:
            name = inputs.strength_input or "prompt_strength"
            fixed[name] = request.strength
        if request.lora_scale is not None:
            fixed["lora_scale"] = request.lora_scale
        outputs_input = inputs.outputs_input
        parts = split_count(request.count, inputs.max_outputs)  # [1, 1...] without input
        if outputs_input is not None:
            checked[outputs_input] = parts[0]
        if "seed" in inputs:
            seed = request.seed if request.seed is not None else random.randint(0, MAX_SEED)
            checked["seed"] = seed
        elif request.seed is not None:
            checked["seed"] = request.seed  # refused below: the model takes no seed
    image_spec = inputs.get(image_input) if image_input else None
    if request.sources and image_spec is not None:
        checked[image_spec.name] = (
            [_IMAGE_PLACEHOLDER] if image_spec.is_list else _IMAGE_PLACEHOLDER
        )
    problems = check_options(inputs, {**checked, **fixed})
    if problems:
        raise UserFacingError(" ".join(p.message for p in problems))
    return {
        "kind": request.kind,
        "aspect_ratio": fixed.get("aspect_ratio"),
        "count": sum(parts),
        "seed": seed,
        "strength": request.strength,
        "lora_scale": request.lora_scale,
        "run": inputs.run_ref,
        "inputs": fixed,
        "prompt_input": request.kind != "upscale",
        "image_input": image_input if request.sources else None,
        "image_list": bool(image_spec and image_spec.is_list),
        "outputs_input": outputs_input,
        "parts": parts,
        "sources": [source.to_json() for source in request.sources],
        "parent": request.parent,
    }


def calls(prompt: str, model: str, params: Mapping[str, Any], images: Sequence[str]) -> list[Call]:
    """The predictions of a job planned by :func:`plan`, with ``images`` (one value to
    send per source) in place. Jobs stored before planning existed get the inputs they
    always had."""
    if "parts" not in params:
        return [
            Call(
                model,
                {
                    "prompt": prompt,
                    "aspect_ratio": params.get("aspect_ratio", "1:1"),
                    "num_outputs": params.get("count", 1),
                    "seed": params.get("seed"),
                    "output_format": "png",
                },
            )
        ]
    run = str(params.get("run") or model)
    parts: list[int] = list(params["parts"])
    seed = params.get("seed")
    image_input = params.get("image_input")
    upscale = params.get("kind") == "upscale"
    out: list[Call] = []
    offset = 0
    for index, count in enumerate(parts):
        inputs = dict(params.get("inputs") or {})
        if params.get("prompt_input", True):
            inputs["prompt"] = prompt
        if params.get("outputs_input"):
            inputs[params["outputs_input"]] = count
        if seed is not None:
            inputs["seed"] = (int(seed) + offset) % (MAX_SEED + 1)
        if image_input and images:
            value = images[index] if upscale else images[0]
            inputs[image_input] = [value] if params.get("image_list") else value
        out.append(Call(run, inputs))
        offset += count
    return out


def sources_of(params: Mapping[str, Any]) -> list[ImageSource]:
    return [ImageSource.from_json(s) for s in params.get("sources") or [] if isinstance(s, dict)]


def _names(inputs: ModelInputs) -> str:
    return ", ".join(inputs.names) or "nothing"


def no_image(model: str, kind: str, image_models: Sequence[str]) -> str:
    if kind == "upscale":
        return f"The upscaler `{model}` does not take an image (check UPSCALE_MODEL)."
    if kind == "vary":
        return f"`{model}` does not take an input image, so it cannot make variations."
    text = f"`{model}` does not take an input image."
    if image_models:
        text += " Models that do: " + ", ".join(f"`{m}`" for m in image_models[:10]) + "."
    else:
        text += " None of the models offered here does."
    return text
