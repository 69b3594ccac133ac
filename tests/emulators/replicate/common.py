"""What every part of the emulator shares: constants, ids and timestamps, problem+json
answers, sockets."""

from __future__ import annotations

import base64
import re
import secrets
import socket
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web

TRAINER_MODEL = "ostris/flux-dev-lora-trainer"
# The version Replicate's own "fine-tune FLUX with an API" guide pins.
TRAINER_VERSION_ID = "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497"
TRAINER_VERSION = f"{TRAINER_MODEL}:{TRAINER_VERSION_ID}"
FLUX_SCHNELL = "black-forest-labs/flux-schnell"
FLUX_DEV = "black-forest-labs/flux-dev"
UPSCALER_MODEL = "nightmareai/real-esrgan"
# A version of nightmareai/real-esrgan that projects commonly pin.
UPSCALER_VERSION_ID = "f121d640bd286e1fdc67f9799164c1d5be36ff74576ee11c803ae5b665dd46aa"
UPSCALER_VERSION = f"{UPSCALER_MODEL}:{UPSCALER_VERSION_ID}"

# The two refusals the real models give, verbatim.
NSFW_OFFICIAL = (
    "All generated images contained NSFW content. Try running it again with a different prompt."
)
NSFW_LORA = "NSFW content detected. Try running it again, or try a different prompt."
ZIP_ERROR = "input_images must be a zip file"

DEFAULT_TOKEN = "r8_emulatorToken0123456789abcdefghijklmn"
DEFAULT_USERNAME = "emu-user"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
ALL_EVENTS = frozenset({"start", "output", "logs", "completed"})
CREATE_PATHS = (
    r"/v1/predictions|/v1/models/[^/]+/[^/]+/predictions"
    r"|/v1/models/[^/]+/[^/]+/versions/[^/]+/trainings"
)
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
NOT_FOUND = "The requested resource could not be found."


def now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def new_id() -> str:
    """Like Replicate's prediction ids: 26 lowercase base32 characters."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]


def bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def boundary(request: web.Request) -> bytes | None:
    match = re.search(r'boundary="?([^";]+)"?', request.headers.get("Content-Type", ""))
    return match.group(1).encode() if match else None


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """An RFC 7807 error as Replicate sends them (``extra``: more members, such as the
    ``invalid_fields`` of an input validation failure)."""
    return web.json_response(
        {"title": title, "detail": detail, "status": status, **(extra or {})},
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )


class ProblemError(Exception):
    """A problem answer raised from deep inside a handler."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def not_found() -> ProblemError:
    return ProblemError(404, "Not found", NOT_FOUND)
