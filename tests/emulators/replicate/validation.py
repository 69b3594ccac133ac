"""Checking a prediction's (or training's) ``input`` against its version's schema, with
the 422 Replicate answers when it does not fit.

Replicate answers ``application/problem+json`` with ``title: "Input validation
failed"``, a ``detail`` of one ``- field: description`` line per problem and the same
problems as ``invalid_fields [{type, field, description}]``, worded as its validator
words them, for example::

    - input: prompt is required
    - input.num_outputs: Must be less than or equal to 4
    - input.output_format: output_format must be one of the following: "webp", "jpg", "png"

Unknown inputs: Replicate itself drops an input the model does not declare and runs the
model anyway. The emulator refuses them by default (``Additional property lora_scale is
not allowed``), so that a test sees the bot sending an option the model does not take;
``unknown_inputs="ignore"`` behaves like Replicate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.emulators.replicate.common import problem
from tests.emulators.replicate.schemas import input_schema

_URI = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:\S+")
_JSON_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


@dataclass(frozen=True)
class InvalidField:
    type: str  # required, additional_property_not_allowed, invalid_type, enum, number_lte...
    field: str  # "input" or "input.<name>"
    description: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "field": self.field, "description": self.description}

    def line(self) -> str:
        return f"- {self.field}: {self.description}"


def _number(value: float) -> str:
    return f"{value:g}"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_type(value: Any, type_: str) -> bool:
    if type_ == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = _JSON_TYPES.get(type_)
    return expected is None or isinstance(value, expected)


def resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """A property with its ``allOf`` ``$ref``s (Cog's choices) merged in."""
    merged = {k: v for k, v in prop.items() if k != "allOf"}
    for part in prop.get("allOf", []):
        ref = part.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            target = schema["components"]["schemas"].get(ref.rsplit("/", 1)[1], {})
            merged = {**target, **merged}
        else:
            merged = {**part, **merged}
    return merged


def _value_errors(name: str, spec: dict[str, Any], value: Any) -> list[InvalidField]:
    field = f"input.{name}"
    type_ = spec.get("type")
    if isinstance(type_, str) and not _is_type(value, type_):
        return [
            InvalidField(
                "invalid_type",
                field,
                f"Invalid type. Expected: {type_}, given: {_type_name(value)}",
            )
        ]
    errors = []
    if "enum" in spec and value not in spec["enum"]:
        allowed = ", ".join(json.dumps(c) for c in spec["enum"])
        errors.append(
            InvalidField("enum", field, f"{name} must be one of the following: {allowed}")
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        maximum, minimum = spec.get("maximum"), spec.get("minimum")
        if maximum is not None and value > maximum:
            errors.append(
                InvalidField(
                    "number_lte", field, f"Must be less than or equal to {_number(maximum)}"
                )
            )
        if minimum is not None and value < minimum:
            errors.append(
                InvalidField(
                    "number_gte", field, f"Must be greater than or equal to {_number(minimum)}"
                )
            )
    if spec.get("format") == "uri" and isinstance(value, str) and not _URI.fullmatch(value):
        errors.append(InvalidField("format", field, "Does not match format 'uri'"))
    if type_ == "array" and isinstance(value, list) and isinstance(spec.get("items"), dict):
        for item in value:
            errors.extend(_value_errors(name, spec["items"], item))
    return errors


def input_errors(
    schema: dict[str, Any], payload: Any, *, refuse_unknown: bool = True
) -> list[InvalidField]:
    """Every problem of ``payload`` (the request's ``input``) against the version schema."""
    if not isinstance(payload, dict):
        if payload is None:
            return [InvalidField("required", "", "input is required")]
        return [
            InvalidField(
                "invalid_type",
                "input",
                f"Invalid type. Expected: object, given: {_type_name(payload)}",
            )
        ]
    spec = input_schema(schema)
    properties: dict[str, Any] = spec.get("properties", {})
    errors = [
        InvalidField("required", "input", f"{name} is required")
        for name in spec.get("required", [])
        if name not in payload
    ]
    for name, value in payload.items():
        prop = properties.get(name)
        if prop is None:
            if refuse_unknown:
                errors.append(
                    InvalidField(
                        "additional_property_not_allowed",
                        "input",
                        f"Additional property {name} is not allowed",
                    )
                )
            continue
        errors.extend(_value_errors(name, resolve(schema, prop), value))
    return errors


def refuse_input(
    schema: dict[str, Any], payload: Any, *, refuse_unknown: bool = True
) -> web.Response | None:
    """The 422 Replicate answers to a missing or invalid ``input``, or None if it is fine."""
    errors = input_errors(schema, payload, refuse_unknown=refuse_unknown)
    if not errors:
        return None
    detail = "".join((e.line() if e.field else f"- {e.description}") + "\n" for e in errors)
    return problem(
        422,
        "Input validation failed",
        detail,
        extra={"invalid_fields": [e.to_json() for e in errors]},
    )
