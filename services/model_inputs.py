"""What a model takes, read from the OpenAPI document Cog publishes for each version.

``GET /v1/models/{owner}/{name}`` answers ``latest_version.openapi_schema``; its
``components.schemas.Input.properties`` are the model's inputs, each with a JSON
``type``, maybe ``minimum``/``maximum``, a ``default``, ``format: uri`` for a file, and
for a fixed set of choices an ``allOf`` with a ``$ref`` to an enum schema. This module
turns that document into :class:`ModelInputs` and checks requested options against it,
so an option a model does not take is refused before anything is spent.

Pure and light (no client, no I/O): the fetching and caching are
:class:`services.replicate.schemas.ModelSchemas`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "IMAGE_INPUT_NAMES",
    "InputSpec",
    "ModelInputs",
    "OptionProblem",
    "check_options",
    "split_count",
]

#: Names models give their input image, most usual first.
IMAGE_INPUT_NAMES = ("image", "input_image", "img", "init_image", "image_input", "image_url")
_STRENGTH_NAMES = ("prompt_strength", "strength")
_OUTPUTS_NAMES = ("num_outputs", "num_images", "number_of_images")
#: ``max_outputs`` of a model whose count input has no maximum.
UNBOUNDED_OUTPUTS = 4


@dataclass(frozen=True)
class InputSpec:
    """One input of a model, with its ``allOf``/``$ref`` choices resolved."""

    name: str
    type: str | None  # JSON type: string, integer, number, boolean, array, object
    description: str = ""
    default: Any = None
    has_default: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    format: str | None = None  # "uri" for a file; for a list, the items' format
    required: bool = False
    nullable: bool = False
    order: int = 0

    @property
    def is_file(self) -> bool:
        """A file (or list of files) given as a URL or data URI."""
        return self.format == "uri"

    @property
    def is_list(self) -> bool:
        return self.type == "array"

    def allowed(self) -> str | None:
        """What values fit, in words ("1 to 4", "one of 1:1, 16:9"), or None if any."""
        if self.choices is not None:
            return "one of " + ", ".join(_show(c) for c in self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f"{_show(self.minimum)} to {_show(self.maximum)}"
        if self.minimum is not None:
            return f"at least {_show(self.minimum)}"
        if self.maximum is not None:
            return f"at most {_show(self.maximum)}"
        return None


@dataclass(frozen=True)
class ModelInputs:
    """The inputs of one model version, in the model's own order (``x-order``).

    ``model`` is the reference asked for (``owner/name`` or ``owner/name:version``);
    ``version`` the version the document is from (the latest one for ``owner/name``);
    ``official`` whether Replicate runs it by name (None: not known)."""

    model: str
    inputs: tuple[InputSpec, ...] = ()
    version: str | None = None
    official: bool | None = None
    output_is_list: bool = True

    @classmethod
    def from_openapi(
        cls,
        schema: Mapping[str, Any] | None,
        *,
        model: str,
        version: str | None = None,
        official: bool | None = None,
    ) -> ModelInputs:
        """Read a version's ``openapi_schema``; anything missing or malformed reads as no
        inputs rather than an error (a model without a usable schema takes nothing we
        could check)."""
        components = _dict(_dict(schema).get("components")).get("schemas")
        schemas = _dict(components)
        input_schema = _dict(schemas.get("Input"))
        required = set(_list(input_schema.get("required")))
        specs = []
        for index, (name, raw) in enumerate(_dict(input_schema.get("properties")).items()):
            if not isinstance(name, str) or not isinstance(raw, Mapping):
                continue
            specs.append(_spec(name, _resolve(schemas, raw), name in required, index))
        specs.sort(key=lambda spec: spec.order)
        output = _resolve(schemas, _dict(schemas.get("Output")))
        return cls(
            model=model,
            inputs=tuple(specs),
            version=version,
            official=official,
            output_is_list=output.get("type", "array") == "array",
        )

    # ------------------------------------------------------------------ lookups

    def __contains__(self, name: object) -> bool:
        return any(spec.name == name for spec in self.inputs)

    def get(self, name: str) -> InputSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def default(self, name: str) -> Any:
        """The model's default for ``name`` (None if it has none)."""
        spec = self.get(name)
        return spec.default if spec is not None else None

    # ------------------------------------------------------------------ derived

    @property
    def takes_image(self) -> str | None:
        """The name of the input image this model takes (``image``, ``input_image``,
        ``img``...), or None. A list input (``input_images: [uri]``) counts only when
        there is no single one; check ``get(name).is_list`` before sending."""
        files = [s for s in self.inputs if s.is_file and "mask" not in s.name]
        for wanted in IMAGE_INPUT_NAMES:
            found = next((s for s in files if s.name == wanted and not s.is_list), None)
            if found is not None:
                return found.name
        # A single file named "...images" is an archive of them (a trainer's zip).
        imagey = [
            s
            for s in files
            if ("image" in s.name or "img" in s.name)
            and (s.is_list or not s.name.endswith("images"))
        ]
        single = [s for s in imagey if not s.is_list]
        chosen = single or imagey
        return chosen[0].name if chosen else None

    @property
    def strength_input(self) -> str | None:
        """How strongly the prompt changes the input image (``prompt_strength``: 1.0
        ignores the image), if the model takes one."""
        return next((n for n in _STRENGTH_NAMES if n in self), None)

    @property
    def outputs_input(self) -> str | None:
        """The input that says how many images one prediction makes."""
        return next((n for n in _OUTPUTS_NAMES if n in self), None)

    @property
    def max_outputs(self) -> int:
        """Images one prediction can make: the count input's maximum, 1 without a count
        input, :data:`UNBOUNDED_OUTPUTS` when it has no maximum."""
        name = self.outputs_input
        spec = self.get(name) if name else None
        if spec is None:
            return 1
        if spec.maximum is None:
            return UNBOUNDED_OUTPUTS
        return max(1, math.floor(spec.maximum))

    @property
    def has_lora_scale(self) -> bool:
        return "lora_scale" in self

    @property
    def aspect_ratios(self) -> tuple[str, ...]:
        spec = self.get("aspect_ratio")
        if spec is None or spec.choices is None:
            return ()
        return tuple(str(c) for c in spec.choices)

    @property
    def run_ref(self) -> str:
        """The reference to run: as asked when it names a version, ``owner/name`` for an
        official model, else ``owner/name:<latest version>`` (community models are run
        by version only)."""
        if ":" in self.model or self.official or not self.version:
            return self.model
        return f"{self.model}:{self.version}"


@dataclass(frozen=True)
class OptionProblem:
    """Why one requested option does not fit: ``kind`` is ``unknown`` (the model does not
    take it), ``no_image`` (an input image for a model without one), ``type``, ``range``,
    ``choice`` or ``missing``; ``allowed`` says what would fit (a range, choices, or the
    inputs the model takes); ``message`` is a plain sentence for the user."""

    option: str
    kind: str
    message: str
    allowed: str | None = None


def check_options(
    inputs: ModelInputs, options: Mapping[str, Any], *, complete: bool = False
) -> list[OptionProblem]:
    """Every problem of ``options`` (Replicate input names to values; None values are
    skipped, as the service drops them) against what the model takes. With
    ``complete``, required inputs that are missing are problems too."""
    problems: list[OptionProblem] = []
    model = inputs.model
    for name, value in options.items():
        if value is None:
            continue
        spec = inputs.get(name)
        if spec is None:
            problems.append(_unknown(inputs, name))
            continue
        problem = _value_problem(model, spec, value)
        if problem is not None:
            problems.append(problem)
    if complete:
        for spec in inputs.inputs:
            if spec.required and options.get(spec.name) is None:
                problems.append(
                    OptionProblem(spec.name, "missing", f"{model} needs {spec.name}.", None)
                )
    return problems


def split_count(count: int, max_outputs: int) -> list[int]:
    """How many images each prediction makes so that together they make ``count``, none
    more than ``max_outputs``: ``split_count(4, 1) == [1, 1, 1, 1]``,
    ``split_count(6, 4) == [4, 2]``."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    per = max(1, max_outputs)
    full, rest = divmod(count, per)
    return [per] * full + ([rest] if rest else [])


# ---------------------------------------------------------------------- helpers


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _resolve(schemas: Mapping[str, Any], prop: Mapping[str, Any]) -> dict[str, Any]:
    """``prop`` with its ``allOf``/``anyOf`` ``$ref``s merged in (its own keys win);
    an ``anyOf`` with ``{type: null}`` makes it nullable."""
    merged = {k: v for k, v in prop.items() if k not in ("allOf", "anyOf", "$ref")}
    parts = [*_list(prop.get("allOf")), *_list(prop.get("anyOf"))]
    if "$ref" in prop:
        parts.append({"$ref": prop["$ref"]})
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "null":
            merged["nullable"] = True
            continue
        ref = part.get("$ref")
        target: Any = part
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            target = schemas.get(ref.rsplit("/", 1)[1], {})
        for key, value in _dict(target).items():
            merged.setdefault(key, value)
    return merged


def _spec(name: str, prop: Mapping[str, Any], required: bool, index: int) -> InputSpec:
    type_ = prop.get("type")
    fmt = prop.get("format")
    if type_ == "array":
        fmt = _dict(prop.get("items")).get("format")
    choices = prop.get("enum")
    order = prop.get("x-order")
    return InputSpec(
        name=name,
        type=type_ if isinstance(type_, str) else None,
        description=str(prop.get("description") or ""),
        default=prop.get("default"),
        has_default="default" in prop,
        minimum=_number(prop.get("minimum")),
        maximum=_number(prop.get("maximum")),
        choices=tuple(choices) if isinstance(choices, list) else None,
        format=fmt if isinstance(fmt, str) else None,
        required=required,
        nullable=bool(prop.get("nullable")),
        order=order if isinstance(order, int) and not isinstance(order, bool) else 1000 + index,
    )


def _names(names: Iterable[str]) -> str:
    return ", ".join(names) or "nothing"


def _unknown(inputs: ModelInputs, name: str) -> OptionProblem:
    looks_like_image = name in IMAGE_INPUT_NAMES or "image" in name
    if looks_like_image and inputs.takes_image is None:
        return OptionProblem(name, "no_image", f"{inputs.model} does not take an input image.")
    names = _names(inputs.names)
    return OptionProblem(
        name, "unknown", f"{inputs.model} does not take {name}; it takes {names}.", names
    )


_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "string": "text",
    "array": "a list",
    "object": "an object",
}


def _fits_type(value: Any, type_: str) -> bool:
    if type_ == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if type_ == "number":
        return _number(value) is not None
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "array":
        return isinstance(value, list | tuple)
    if type_ == "object":
        return isinstance(value, Mapping)
    return True


def _value_problem(model: str, spec: InputSpec, value: Any) -> OptionProblem | None:
    name = spec.name
    if spec.is_file and not spec.is_list and not _is_link(value):
        return OptionProblem(
            name, "type", f"{name} must be a link or a data URI for {model}.", "a link"
        )
    if spec.type is not None and not _fits_type(value, spec.type):
        word = _TYPE_WORDS.get(spec.type, spec.type)
        return OptionProblem(
            name, "type", f"{name} must be {word} for {model} (got {value!r}).", word
        )
    allowed = spec.allowed()
    if spec.choices is not None and value not in spec.choices:
        return OptionProblem(
            name, "choice", f"{name} must be {allowed} for {model} (got {_show(value)}).", allowed
        )
    number = _number(value)
    if number is not None and (
        (spec.minimum is not None and number < spec.minimum)
        or (spec.maximum is not None and number > spec.maximum)
    ):
        return OptionProblem(
            name, "range", f"{name} must be {allowed} for {model} (got {_show(value)}).", allowed
        )
    return None


def _is_link(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://", "data:"))
