"""What every REST route needs: authentication and reading a body (JSON, or
multipart with ``payload_json`` and ``files[n]``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.emulators.discord.common import DiscordAPIError, invalid_form
from tests.emulators.discord.state import EmulatorState


@dataclass
class Upload:
    index: int
    filename: str
    data: bytes


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_PART_NAME = re.compile(rb'name="([^"]*)"')
_PART_FILENAME = re.compile(rb'filename="([^"]*)"')
_FILES_FIELD = re.compile(r"files\[(\d+)\]")


def parse_multipart(content_type: str, body: bytes) -> tuple[Any, list[Upload]]:
    match = _BOUNDARY.search(content_type)
    if not match:
        raise invalid_form("multipart body without a boundary")
    delimiter = b"\r\n--" + match.group(1).encode()
    payload: Any = None
    uploads: list[Upload] = []
    for part in (b"\r\n" + body).split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part[2:].partition(b"\r\n\r\n")
        name_m = _PART_NAME.search(head)
        if not name_m:
            continue
        name = name_m.group(1).decode()
        if name == "payload_json":
            payload = json.loads(data)
            continue
        files_m = _FILES_FIELD.fullmatch(name)
        fn_m = _PART_FILENAME.search(head)
        if files_m is None:
            raise invalid_form(f"unexpected multipart field {name!r}")
        filename = fn_m.group(1).decode() if fn_m else f"file{files_m.group(1)}"
        uploads.append(Upload(int(files_m.group(1)), filename, data))
    return payload, uploads


class RestBase(EmulatorState):
    def _require_bot(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.bot_token}":
            raise DiscordAPIError(401, 0, "401: Unauthorized")

    def _require_app(self, request: web.Request) -> None:
        self._require_bot(request)
        if request.match_info.get("application_id") != str(self.application_id):
            raise DiscordAPIError(403, 50001, "Missing Access")

    async def _read(self, request: web.Request) -> tuple[Any, list[Upload]]:
        body = await request.read()
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            payload, uploads = parse_multipart(ctype, body)
            return payload if payload is not None else {}, uploads
        if not body:
            return {}, []
        try:
            return json.loads(body), []
        except ValueError as exc:
            raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.") from exc
