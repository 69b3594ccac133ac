"""Reading a request that may carry an input image: ``application/json`` (the image, if
any, as a data URI in ``image``) or ``multipart/form-data`` (the image in the part named
``image``, the other fields as text parts). The image is checked (type, size, decoding,
pixels) before anything is spent."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from api.bodies import (
    BODY_TIMEOUT,
    MAX_JSON_BODY,
    check_fields,
    idle,
    parse_json_object,
    read_body,
    read_form,
)
from api.problems import Problem, service_problem
from services.app import Services
from services.generation.requests import ImageSource
from services.input_images import InputImage, InputImageError

log = logging.getLogger(__name__)

#: Room for the multipart framing and the text fields beside the image.
FRAMING = 64 * 1024
_DATA_URI = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*?;base64,", re.ASCII)


@dataclass
class ImageRequest:
    """The fields of a request (text fields as strings when they came from a form) and
    its input image, checked."""

    fields: dict[str, Any]
    image: InputImage | None = None
    filename: str = "image"
    form: bool = False
    sources: tuple[ImageSource, ...] = field(default=())


def _image_limit(services: Services) -> int:
    return services.settings.max_input_image_mb * 1024 * 1024


async def read_image_request(
    request: web.Request,
    services: Services,
    allowed: Sequence[str],
    required: Sequence[str],
) -> ImageRequest:
    """Read and check the body; ``allowed`` names the fields besides ``image``."""
    if request.content_type == "multipart/form-data":
        fields, data, filename = await _read_form(request, services, allowed)
        form = True
    elif request.content_type == "application/json":
        fields, data = await _read_json(request, services, allowed)
        filename, form = "image", False
    else:
        raise Problem(415, "Send application/json or multipart/form-data.")
    missing = [n for n in required if n != "image" and fields.get(n) in (None, "")]
    if "image" in required and data is None:
        missing.append("image")
    if missing:
        raise Problem(422, f"Missing required field(s): {', '.join(missing)}.")
    if data is None:
        return ImageRequest(fields, form=form)
    try:
        image = await services.generations.sources.check(data)
    except InputImageError as exc:
        raise service_problem(exc) from None
    return ImageRequest(
        fields, image, filename, form, (ImageSource(filename=filename[:100] or "image"),)
    )


async def _read_json(
    request: web.Request, services: Services, allowed: Sequence[str]
) -> tuple[dict[str, Any], bytes | None]:
    limit = MAX_JSON_BODY + _image_limit(services) * 4 // 3
    raw = await read_body(request, limit)
    data = parse_json_object(raw)
    if len(raw) > MAX_JSON_BODY and not isinstance(data.get("image"), str):
        # Only an image makes a JSON body bigger than the usual limit.
        raise Problem(413, f"The request body is larger than {MAX_JSON_BODY} bytes.")
    check_fields(data, ("image", *allowed), ())
    image = data.pop("image", None)
    if image is None:
        return data, None
    if not isinstance(image, str):
        raise Problem(422, "`image` must be a data URI (data:image/png;base64,...).")
    return data, decode_data_uri(image, _image_limit(services))


def decode_data_uri(value: str, limit: int) -> bytes:
    """The bytes of a base64 ``data:`` URI (its declared type is not trusted)."""
    match = _DATA_URI.match(value)
    if match is None:
        raise Problem(422, "`image` must be a data URI (data:image/png;base64,...).")
    payload = value[match.end() :]
    if len(payload) * 3 // 4 > limit:
        raise Problem(413, f"The image is larger than {limit >> 20} MB.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(422, "`image` is not valid base64.") from None


async def _read_form(
    request: web.Request, services: Services, allowed: Sequence[str]
) -> tuple[dict[str, Any], bytes | None, str]:
    limit = _image_limit(services)
    if request.content_length is not None and request.content_length > limit + FRAMING:
        raise Problem(413, f"The image is larger than {limit >> 20} MB.")
    data: bytes | None = None
    filename = "image"

    async def read_image(part: BodyPartReader) -> None:
        nonlocal data, filename
        data = await _image_part(part, limit)
        filename = part.filename or "image"

    fields, _ = await read_form(
        request,
        file_part="image",
        read_file=read_image,
        fields=allowed,
        one_file="Send one image only, in the part named `image`.",
        within=BODY_TIMEOUT * 4,
    )
    return fields, data, filename


async def _image_part(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await idle(part.read_chunk(64 * 1024)):
        data += chunk
        if len(data) > limit:
            raise Problem(413, f"The image is larger than {limit >> 20} MB.")
    return bytes(data)


def number_field(value: Any, name: str, low: float, high: float, *, text: bool) -> float | None:
    """A number in range; ``text=True`` also takes its decimal form (form fields)."""
    if value is None or (text and value == ""):
        return None
    if text and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise Problem(422, f"`{name}` must be a number from {low:g} to {high:g}.") from None
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise Problem(422, f"`{name}` must be a number from {low:g} to {high:g}.")
    return float(value)
