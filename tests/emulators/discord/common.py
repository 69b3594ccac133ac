"""Constants, permission and intent bits, errors and small helpers shared by the
emulator's modules."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * MIB
MAX_REQUEST_SIZE = 100 * MIB  # read everything, then answer 413 like Discord does

# Message flags
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_COMPONENTS_V2 = 1 << 15
SENDABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2
WEBHOOK_SENDABLE_FLAGS = SENDABLE_FLAGS | FLAG_EPHEMERAL
EDITABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_COMPONENTS_V2

# Interaction types
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5


class Perm:
    """Permission bits (a subset; any int works where a permission is expected)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38
    ALL = (1 << 51) - 1

    EVERYONE_DEFAULT = (
        CREATE_INSTANT_INVITE
        | ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | USE_EXTERNAL_EMOJIS
        | USE_APPLICATION_COMMANDS
        | SEND_MESSAGES_IN_THREADS
    )
    # What a bot invited with the usual "send messages" scope set holds. It can ping
    # @everyone: that is what makes the allowed_mentions checks meaningful.
    BOT_DEFAULT = EVERYONE_DEFAULT | MENTION_EVERYONE | MANAGE_MESSAGES


class Intent:
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    MESSAGE_CONTENT = 1 << 15
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that carries a guild's events: ``(guild_id >> 22) % shard_count``."""
    return (guild_id >> 22) % shard_count


def perm_value(value: int | Any) -> int:
    """Accept an int or anything with ``.value`` (e.g. ``discord.Permissions``)."""
    return int(getattr(value, "value", value))


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def now() -> datetime:
    return datetime.now(UTC)


class DiscordAPIError(Exception):
    """Raised inside handlers; turned into Discord's JSON error answer."""

    def __init__(
        self, status: int, code: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def invalid_form(reason: str) -> DiscordAPIError:
    log.warning("discord emulator refused a payload: %s", reason)
    err = DiscordAPIError(400, 50035, "Invalid Form Body")
    err.reason = reason  # type: ignore[attr-defined]
    return err


class Snowflakes:
    """Time-based, strictly increasing ids, so discord.py's ``created_at`` is sane."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        now_ms = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(self._last + 1, now_ms)
        return self._last

    def next_on_shard(self, shard_id: int, shard_count: int) -> int:
        """The next id whose guild would live on ``shard_id`` of ``shard_count`` (its
        timestamp moved at most ``shard_count - 1`` ms ahead)."""
        candidate = self.next()
        timestamp = candidate >> 22
        ahead = (shard_id - timestamp) % shard_count
        if ahead:
            self._last = (timestamp + ahead) << 22
        return self._last


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Exactly ``Content-Type: application/json`` (a charset makes discord.py read text)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def no_content() -> web.Response:
    return web.Response(status=204)


def skip_spec(request: web.Request) -> None:
    """Mark an exchange the OpenAPI document does not describe (``spec.py`` reads the
    plain ``"spec_skip"`` key, which aiohttp warns about when it is set)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        request["spec_skip"] = True


def truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")
