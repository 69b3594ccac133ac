"""Reading request bodies: size-limited, and within a time limit, so that a slow or
greedy client cannot hold a connection forever; and checking the fields of a JSON body."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from api.problems import Problem

log = logging.getLogger(__name__)

#: Parts a multipart body may have at most.
MAX_FORM_PARTS = 10

T = TypeVar("T")

#: JSON bodies of the API (a prompt, a few names) are small.
MAX_JSON_BODY = 64 * 1024
#: Each text field of a multipart training request.
MAX_FORM_FIELD = 1024
#: A whole small body must arrive within this time.
BODY_TIMEOUT = 30.0
#: An upload may take long, but must not stall for longer than this between two chunks...
UPLOAD_IDLE_TIMEOUT = 30.0
#: ...nor take longer than this overall.
UPLOAD_TIMEOUT = 600.0
CHUNK = 64 * 1024


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes, within :data:`BODY_TIMEOUT`."""
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, f"The request body is larger than {limit} bytes.")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > limit:
                    raise Problem(413, f"The request body is larger than {limit} bytes.")
    except TimeoutError:
        raise Problem(408, "The request body did not arrive in time.") from None
    except (RequestPayloadError, ConnectionError):
        raise Problem(400, "The request body was cut off.") from None
    return bytes(body)


class HugeInteger:
    """A JSON integer too long for Python to read (over 4300 digits): kept as a value
    that no field accepts, so that the answer names the field instead of calling the
    body invalid JSON."""

    def __repr__(self) -> str:
        return "HugeInteger()"


def _parse_int(text: str) -> int | HugeInteger:
    try:
        return int(text)
    except ValueError:
        return HugeInteger()


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise Problem(415, "Send the body as application/json.")
    return parse_json_object(await read_body(request, MAX_JSON_BODY))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw, parse_int=_parse_int)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise Problem(422, "The body must be a JSON object.")
    return data


def check_fields(data: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        names = ", ".join(f"`{name[:40]}`" for name in unknown[:5])
        raise Problem(422, f"Unknown field(s) {names}; allowed: {', '.join(allowed)}.")
    missing = [name for name in required if data.get(name) in (None, "")]
    if missing:
        raise Problem(422, f"Missing required field(s): {', '.join(missing)}.")


def string_field(data: dict[str, Any], name: str, max_length: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Problem(422, f"`{name}` must be a string.")
    if len(value) > max_length:
        raise Problem(422, f"`{name}` is too long ({len(value)} > {max_length} characters).")
    return value


def integer_field(value: Any, name: str, low: int, high: int, *, text: bool = False) -> int | None:
    """A whole number in range; ``text=True`` also takes its decimal form (form fields)."""
    if value is None:
        return None
    if text and isinstance(value, str):
        value = value.strip()
        if value.isascii() and value.lstrip("-").isdigit() and len(value) < 20:
            value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Problem(422, f"`{name}` must be a whole number between {low} and {high}.")
    return value


# --------------------------------------------------------------------------- multipart


async def idle(awaitable: Awaitable[T]) -> T:
    """``awaitable``, unless the client sends nothing for :data:`UPLOAD_IDLE_TIMEOUT`."""
    async with asyncio.timeout(UPLOAD_IDLE_TIMEOUT):
        return await awaitable


async def part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await idle(part.read_chunk(CHUNK)):
        yield chunk


async def text_part(part: BodyPartReader, name: str) -> str:
    """A multipart text field, at most :data:`MAX_FORM_FIELD` bytes of UTF-8."""
    data = bytearray()
    while chunk := await idle(part.read_chunk(CHUNK)):
        data += chunk
        if len(data) > MAX_FORM_FIELD:
            raise Problem(413, f"The field `{name}` is larger than {MAX_FORM_FIELD} bytes.")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Problem(422, f"The field `{name}` is not UTF-8 text.") from None


async def read_form(
    request: web.Request,
    *,
    file_part: str,
    read_file: Callable[[BodyPartReader], Awaitable[None]],
    fields: Sequence[str],
    one_file: str,
    within: float,
    what: str = "request body",
) -> tuple[dict[str, str], bool]:
    """Read a multipart body within ``within`` seconds: the part named ``file_part``
    goes to ``read_file`` (once; a second one is refused with ``one_file``), the parts
    named in ``fields`` are read as text, anything else is refused. Returns the text
    fields and whether the file came."""
    values: dict[str, str] = {}
    got_file = False
    try:
        async with asyncio.timeout(within):
            reader = await request.multipart()
            for _ in range(MAX_FORM_PARTS + 1):
                part = await idle(reader.next())
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise Problem(400, "Nested multipart bodies are not accepted.")
                name = part.name or ""
                if name == file_part:
                    if got_file:
                        raise Problem(422, one_file)
                    await read_file(part)
                    got_file = True
                elif name in fields:
                    if name in values:
                        raise Problem(422, f"The field `{name}` is sent twice.")
                    values[name] = await text_part(part, name)
                else:
                    allowed = ", ".join((file_part, *fields))
                    raise Problem(422, f"Unknown part `{name[:40]}`; allowed: {allowed}.")
            else:
                raise Problem(422, f"Too many parts (at most {MAX_FORM_PARTS}).")
    except TimeoutError:
        raise Problem(408, f"The {what} did not arrive in time.") from None
    except (RequestPayloadError, ConnectionError):
        raise Problem(400, f"The {what} was cut off.") from None
    except (HttpProcessingError, ValueError, AssertionError, LookupError) as exc:
        # aiohttp's multipart parser raises these on malformed framing or headers.
        log.debug("malformed multipart body: %r", exc)
        raise Problem(400, "The multipart body is malformed.") from None
    return values, got_file
