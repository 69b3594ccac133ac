"""A wire-level emulator of the Discord API for behaviour tests.

One aiohttp server answers the REST API under ``/api/v10`` and the gateway websocket at
``/gateway``; the real discord.py talks to it over real sockets once
``services.discord_endpoints.point_discord_at(emu.api_base, emu.gateway_url)`` has run.
Every REST exchange is validated against Discord's OpenAPI document (see
``tests/emulators/spec.py``), so the emulator's own answers must be spec-complete too.

Tests drive it as a Discord user would: ``await emu.slash(...)`` sends an
INTERACTION_CREATE built from the commands the bot synced, ``await emu.press(...)``
clicks a button, and the returned :class:`InteractionHandle` records what the bot
answered. Waiting is event driven (an ``asyncio.Condition`` notified on every change),
never by sleeping.

Behaviour follows Discord where tests depend on it: interaction tokens expire (401,
50027), a second callback is refused (400, 40060), a callback later than 3 s is an
unknown interaction (404, 10062), uploads over the interaction's
``attachment_size_limit`` are refused (413, 40005), missing channel permissions give
403/50013, ``nonce`` + ``enforce_nonce`` deduplicate creates, the first follow-up to a
deferred reply fills its "thinking" message, and ``allowed_mentions`` decides who would
be pinged (:meth:`Message.pinged_users`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import mimetypes
import re
import secrets
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import WSMsgType, web

from tests.emulators.spec import SpecChecker, validation_middleware

log = logging.getLogger(__name__)

# Set while a REST request is handled: state changes then wake waiters only once the
# answer is written.
_IN_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "discord_emulator_in_request", default=False
)

T = TypeVar("T")

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
_SENDABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2
_WEBHOOK_SENDABLE_FLAGS = _SENDABLE_FLAGS | FLAG_EPHEMERAL
_EDITABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_COMPONENTS_V2

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


def _perm_value(value: int | Any) -> int:
    """Accept an int or anything with ``.value`` (e.g. ``discord.Permissions``)."""
    return int(getattr(value, "value", value))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _now() -> datetime:
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


def _invalid_form(reason: str) -> DiscordAPIError:
    log.warning("discord emulator refused a payload: %s", reason)
    err = DiscordAPIError(400, 50035, "Invalid Form Body")
    err.reason = reason  # type: ignore[attr-defined]
    return err


class _Snowflakes:
    """Time-based, strictly increasing ids, so discord.py's ``created_at`` is sane."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(self._last + 1, now)
        return self._last


# --------------------------------------------------------------------------- state


@dataclass(eq=False)
class User:
    id: int
    name: str
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def to_dict(self) -> dict[str, Any]:
        """Full ``UserResponse`` shape."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.name,
            "avatar": None,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "global_name": self.global_name,
            "primary_guild": None,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "collectibles": None,
        }
        if self.bot:
            data["bot"] = True
        return data

    def __repr__(self) -> str:
        return f"<User {self.name} {self.id}>"


@dataclass(eq=False)
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0
    mentionable: bool = False
    managed: bool = False

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "description": None,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass(eq=False)
class Member:
    user: User
    roles: list[Role]
    joined_at: datetime = field(default_factory=_now)
    nick: str | None = None

    def to_dict(self, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r.id) for r in self.roles],
            "joined_at": _iso(self.joined_at),
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.to_dict()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass(eq=False)
class Channel:
    id: int
    name: str
    guild_id: int
    position: int
    type: int = 0
    topic: str | None = None
    # target id -> (type 0 role / 1 member, allow, deny)
    overwrites: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    last_message_id: int | None = None

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def to_dict(self, *, permissions: int | None = None) -> dict[str, Any]:
        """``GuildChannelResponse`` shape (text channel)."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "flags": 0,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "parent_id": None,
            "topic": self.topic,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": None if self.last_message_id is None else str(self.last_message_id),
            "permission_overwrites": [
                {"id": str(target), "type": kind, "allow": str(allow), "deny": str(deny)}
                for target, (kind, allow, deny) in self.overwrites.items()
            ],
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)

    @property
    def everyone(self) -> Role:
        return self.roles[self.id]


@dataclass(eq=False)
class Attachment:
    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclass(frozen=True)
class Component:
    """One interactive leaf of a message's components (button or select)."""

    type: int
    custom_id: str | None
    label: str | None
    disabled: bool
    style: int | None
    url: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


_CONTAINER_KEYS = ("components",)
_INTERACTIVE_TYPES = {2, 3, 5, 6, 7, 8}


def _walk_components(components: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for comp in components:
        yield comp
        yield from _walk_components(comp.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), Mapping):
                yield from _walk_components([comp[key]])


def flatten_components(components: Iterable[Mapping[str, Any]]) -> list[Component]:
    return [
        Component(
            type=c["type"],
            custom_id=c.get("custom_id"),
            label=c.get("label"),
            disabled=bool(c.get("disabled", False)),
            style=c.get("style"),
            url=c.get("url"),
            raw=c,
        )
        for c in _walk_components(components)
        if c.get("type") in _INTERACTIVE_TYPES
    ]


@dataclass(eq=False)
class MessageVersion:
    """One state of a message: the create, then one per edit."""

    content: str
    embeds: list[dict[str, Any]]
    raw_components: list[dict[str, Any]]
    attachment_records: list[Attachment]
    flags: int
    allowed_mentions: dict[str, Any] | None
    at: datetime

    @property
    def components(self) -> list[Component]:
        return flatten_components(self.raw_components)

    @property
    def attachments(self) -> list[tuple[str, bytes]]:
        return [(a.filename, a.data) for a in self.attachment_records]


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


@dataclass(eq=False)
class Message:
    """A message as the emulator stores it; ``versions[-1]`` is the current state."""

    id: int
    channel_id: int
    author: User
    versions: list[MessageVersion]
    created_at: datetime
    type: int = 0
    guild: Guild | None = None
    author_permissions: int = 0
    nonce: str | int | None = None
    tts: bool = False
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    referenced: Message | None = None
    edited_at: datetime | None = None
    deleted: bool = False

    # current state ----------------------------------------------------------
    @property
    def current(self) -> MessageVersion:
        return self.versions[-1]

    @property
    def content(self) -> str:
        return self.current.content

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.current.embeds

    @property
    def raw_components(self) -> list[dict[str, Any]]:
        return self.current.raw_components

    @property
    def components(self) -> list[Component]:
        return self.current.components

    @property
    def attachments(self) -> list[tuple[str, bytes]]:
        return self.current.attachments

    @property
    def attachment_records(self) -> list[Attachment]:
        return self.current.attachment_records

    @property
    def flags(self) -> int:
        return self.current.flags

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & FLAG_LOADING)

    @property
    def allowed_mentions(self) -> dict[str, Any] | None:
        return self.current.allowed_mentions

    @property
    def history(self) -> list[MessageVersion]:
        return list(self.versions)

    def component(self, custom_id: str | None = None, *, label: str | None = None) -> Component:
        for comp in self.components:
            if custom_id is not None and comp.custom_id == custom_id:
                return comp
            if label is not None and comp.label == label:
                return comp
        raise LookupError(f"no component {custom_id or label!r} on message {self.id}")

    # mentions ---------------------------------------------------------------
    def _pings(self, version: MessageVersion) -> tuple[set[int], set[int], bool]:
        if version.flags & FLAG_EPHEMERAL:
            return set(), set(), False
        am = version.allowed_mentions
        if am is None:
            parse = {"users", "roles", "everyone"}
            users_allowed: set[int] = set()
            roles_allowed: set[int] = set()
            replied = True
        else:
            parse = set(am.get("parse") or [])
            users_allowed = {int(u) for u in am.get("users") or []}
            roles_allowed = {int(r) for r in am.get("roles") or []}
            replied = bool(am.get("replied_user", False))
        can_everyone = bool(self.author_permissions & Perm.MENTION_EVERYONE)
        users = {
            int(uid)
            for uid in _USER_MENTION.findall(version.content)
            if "users" in parse or int(uid) in users_allowed
        }
        if replied and self.referenced is not None:
            users.add(self.referenced.author.id)
        roles: set[int] = set()
        for rid in _ROLE_MENTION.findall(version.content):
            role = self.guild.roles.get(int(rid)) if self.guild else None
            if role is None or not ("roles" in parse or role.id in roles_allowed):
                continue
            if role.mentionable or can_everyone:
                roles.add(role.id)
        everyone = (
            ("@everyone" in version.content or "@here" in version.content)
            and "everyone" in parse
            and can_everyone
        )
        users.discard(self.author.id)
        return users, roles, everyone

    def pinged_user_ids(self) -> set[int]:
        """Ids of users Discord would notify, over every version of the message.

        Edits are counted too: the edit that completes a deferred interaction response
        does notify, and counting plain edits as well keeps "nobody is pinged" strict."""
        out: set[int] = set()
        for version in self.versions:
            out |= self._pings(version)[0]
        return out

    def pinged_users(self) -> list[User]:
        ids = self.pinged_user_ids()
        known = {m.user.id: m.user for m in self.guild.members.values()} if self.guild else {}
        return [known.get(uid) or User(uid, f"user-{uid}") for uid in sorted(ids)]

    def pinged_roles(self) -> set[int]:
        out: set[int] = set()
        for version in self.versions:
            out |= self._pings(version)[1]
        return out

    def pinged_everyone(self) -> bool:
        return any(self._pings(v)[2] for v in self.versions)

    # wire -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Full ``MessageResponse`` shape."""
        v = self.current
        users, roles, everyone = self._pings(v)
        members = {m.user.id: m.user for m in self.guild.members.values()} if self.guild else {}
        data: dict[str, Any] = {
            "type": self.type,
            "content": v.content,
            "mentions": [members[u].to_dict() for u in sorted(users) if u in members],
            "mention_roles": [str(r) for r in sorted(roles)],
            "attachments": [a.to_dict() for a in v.attachment_records],
            "embeds": [_embed_response(e) for e in v.embeds],
            "timestamp": _iso(self.created_at),
            "edited_timestamp": _iso(self.edited_at),
            "flags": v.flags,
            "components": _components_response(v.raw_components),
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author.to_dict(),
            "pinned": False,
            "mention_everyone": everyone,
            "tts": self.tts,
        }
        if self.nonce is not None:
            data["nonce"] = self.nonce
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = self.interaction_metadata
        if self.referenced is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.referenced.id),
                "channel_id": str(self.referenced.channel_id),
                "guild_id": str(self.guild.id) if self.guild else None,
            }
            if self.guild is None:
                del data["message_reference"]["guild_id"]
        return data

    def __repr__(self) -> str:
        return f"<Message {self.id} by {self.author.name} {self.content[:40]!r} flags={self.flags}>"


def _embed_response(embed: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in embed.items() if v is not None}
    out.setdefault("type", "rich")
    if "fields" in out:
        out["fields"] = [
            {"name": f["name"], "value": f["value"], "inline": bool(f.get("inline", False))}
            for f in out["fields"]
        ]
    return out


def _drop_none(value: Any) -> Any:
    """Discord omits absent fields in what it returns (an emoji's ``id: null``, say)."""
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _components_response(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Discord numbers every component (``id``) in tree order when the sender did not."""
    counter = itertools.count(1)

    def convert(comp: Mapping[str, Any]) -> dict[str, Any]:
        out = _drop_none(comp)
        if "id" not in out:
            out["id"] = next(counter)
        if "components" in out:
            out["components"] = [convert(c) for c in out["components"]]
        for key in ("component", "accessory"):
            if isinstance(out.get(key), Mapping):
                out[key] = convert(out[key])
        return out

    return [convert(c) for c in components]


# --------------------------------------------------------------------- interactions


@dataclass
class Callback:
    """The first answer the bot gave to an interaction."""

    type: int
    data: dict[str, Any]
    latency: float
    files: list[tuple[str, bytes]] = field(default_factory=list)


class InteractionHandle:
    """One interaction sent to the bot, and everything the bot answered to it."""

    def __init__(
        self,
        emu: DiscordEmulator,
        *,
        type: int,
        data: dict[str, Any],
        user: User,
        channel: Channel,
        attachment_size_limit: int,
        message: Message | None = None,
        parent: InteractionHandle | None = None,
        name: str | None = None,
    ) -> None:
        self.emu = emu
        self.id = emu._ids.next()
        self.token = "emu." + secrets.token_urlsafe(40)
        self.type = type
        self.data = data
        self.user = user
        self.channel = channel
        self.attachment_size_limit = attachment_size_limit
        self.message = message  # the message a component / modal came from
        self.parent = parent
        self.name = name
        self.created = time.monotonic()
        self.sent: float | None = None  # monotonic time the INTERACTION_CREATE went out
        self.created_on_clock = emu.clock()
        self.payload: dict[str, Any] = {}
        self.callback: Callback | None = None
        self.original: Message | None = None
        self.followups: list[Message] = []
        self.expired = False
        self.refused: list[tuple[str, int]] = []  # (route, code) of calls Discord refused

    def __repr__(self) -> str:
        return f"<InteractionHandle type={self.type} {self.name or ''} id={self.id}>"

    @property
    def acknowledged(self) -> bool:
        return self.callback is not None

    @property
    def modal(self) -> dict[str, Any] | None:
        if self.callback is not None and self.callback.type == 9:
            return self.callback.data
        return None

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        if self.callback is not None and self.callback.type == 8:
            return list(self.callback.data.get("choices") or [])
        return None

    @property
    def original_history(self) -> list[MessageVersion]:
        return [] if self.original is None else self.original.history

    def is_expired(self) -> bool:
        return self.expired or self.emu.clock() - self.created_on_clock > self.emu.token_ttl

    def age(self) -> float:
        """Seconds since the interaction was sent, on the emulator's clock."""
        return self.emu.clock() - self.created_on_clock

    async def first_response(
        self,
        timeout: float = 3.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> Callback:
        """The first answer (callback) the bot gave, with its latency."""
        return await self.emu._wait(lambda: self.callback, timeout, f"a callback to {self!r}")

    async def wait_original(
        self,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> Message:
        """The @original message once ``predicate(message)`` holds; without a predicate,
        once it exists and is no longer a deferred "thinking" placeholder."""

        def probe() -> Message | None:
            msg = self.original
            if msg is None:
                return None
            if predicate(msg) if predicate is not None else not msg.loading:
                return msg
            return None

        return await self.emu._wait(probe, timeout, f"@original of {self!r} matching predicate")

    async def wait_followup(
        self,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> Message:
        def probe() -> Message | None:
            for msg in self.followups:
                if predicate is None or predicate(msg):
                    return msg
            return None

        return await self.emu._wait(probe, timeout, f"a follow-up of {self!r} matching predicate")


@dataclass
class RequestRecord:
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    at: float
    status: int = 0


@dataclass
class FaultRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float | None
    via: bool
    remaining: int
    code: int | None
    message: str | None
    hits: int = 0


@dataclass
class _Upload:
    index: int
    filename: str
    data: bytes


@dataclass
class GatewaySession:
    id: str
    intents: int
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    ready: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _Conn:
    """One websocket connection; sends are serialised by a lock."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.session: GatewaySession | None = None
        self.heartbeat_waiters: list[asyncio.Future[None]] = []

    async def send(
        self, payload: Mapping[str, Any], on_send: Callable[[], None] | None = None
    ) -> bool:
        async with self.lock:
            if self.ws.closed:
                return False
            text = json.dumps(payload)
            if on_send is not None:
                on_send()
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
            return True


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_PART_NAME = re.compile(rb'name="([^"]*)"')
_PART_FILENAME = re.compile(rb'filename="([^"]*)"')
_FILES_FIELD = re.compile(r"files\[(\d+)\]")


def _parse_multipart(content_type: str, body: bytes) -> tuple[Any, list[_Upload]]:
    match = _BOUNDARY.search(content_type)
    if not match:
        raise _invalid_form("multipart body without a boundary")
    delimiter = b"\r\n--" + match.group(1).encode()
    payload: Any = None
    uploads: list[_Upload] = []
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
            raise _invalid_form(f"unexpected multipart field {name!r}")
        filename = fn_m.group(1).decode() if fn_m else f"file{files_m.group(1)}"
        uploads.append(_Upload(int(files_m.group(1)), filename, data))
    return payload, uploads


def _json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Exactly ``Content-Type: application/json`` (a charset makes discord.py read text)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def _no_content() -> web.Response:
    return web.Response(status=204)


def _skip_spec(request: web.Request) -> None:
    """Mark an exchange the OpenAPI document does not describe (``spec.py`` reads the
    plain ``"spec_skip"`` key, which aiohttp warns about when it is set)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        request["spec_skip"] = True


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


# ------------------------------------------------------------------------- emulator


class DiscordEmulator:
    """The emulated Discord: state, REST routes, the gateway and the test API."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_name: str = "EmuBot",
        guild_name: str = "Emulated Guild",
        channel_name: str = "general",
        validate: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self._ids = _Snowflakes()
        self.checker = SpecChecker(
            "discord", "discord-openapi.json", "https://discord.com", API_PREFIX
        )
        self.checker.enabled = validate

        # knobs a test may change
        self.bot_token = "emu-bot-token." + secrets.token_urlsafe(12)
        self.attachment_size_limit = DEFAULT_ATTACHMENT_SIZE_LIMIT
        self.token_ttl = 15 * 60.0
        self.callback_deadline: float | None = 3.0
        self.nonce_window = 5 * 60.0
        self.heartbeat_interval_ms = 41_250
        self.allowed_privileged_intents = Intent.PRIVILEGED

        # records
        self.requests: list[RequestRecord] = []
        self.unknown_routes: list[tuple[str, str]] = []
        self.rejections: list[tuple[str, str, str]] = []  # (method, path, reason) of 400s
        self.internal_errors: list[str] = []
        self.attachment_downloads: list[str] = []
        self.interactions: list[InteractionHandle] = []
        self.sync_counts: Counter[int | None] = Counter()
        self.identify_count = 0
        self.resume_count = 0
        self.gateway_received: list[dict[str, Any]] = []

        self._allowed_unknown: list[tuple[str, re.Pattern[str]]] = []
        self._faults: list[FaultRule] = []
        self._changed = asyncio.Condition()
        self._session: GatewaySession | None = None
        self._conns: set[_Conn] = set()
        self._messages: dict[int, Message] = {}
        self._attachments: dict[int, Attachment] = {}
        self._nonces: dict[tuple[int, str], tuple[float, Message]] = {}
        self._commands: dict[int | None, list[dict[str, Any]]] = {}
        self._by_id: dict[int, InteractionHandle] = {}
        self._by_token: dict[str, InteractionHandle] = {}
        self._runner: web.AppRunner | None = None
        self._default_user: User | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._clock_offset = 0.0
        self._inflight = 0

        # the application, its bot user and one guild with one channel
        self.application_id = self._ids.next()
        self.bot_user = User(self.application_id, bot_name, bot=True)
        self.owner = User(self._ids.next(), "guild-owner")
        gid = self._ids.next()
        self.guild = Guild(gid, guild_name, owner_id=self.owner.id)
        self.guild.roles[gid] = Role(gid, "@everyone", Perm.EVERYONE_DEFAULT, position=0)
        self.bot_role = Role(self._ids.next(), bot_name, Perm.BOT_DEFAULT, position=1, managed=True)
        self.guild.roles[self.bot_role.id] = self.bot_role
        self.guild.members[self.owner.id] = Member(self.owner, [])
        self.guild.members[self.bot_user.id] = Member(self.bot_user, [self.bot_role])
        self.channel = self.add_channel(channel_name)

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    async def start(self) -> None:
        app = web.Application(
            client_max_size=MAX_REQUEST_SIZE,
            middlewares=[
                self._outer_middleware,
                validation_middleware(self.checker),
                self._inner_middleware,
            ],
        )
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.debug("discord emulator listening on %s", self.base_url)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- waiting
    async def _notify(self) -> None:
        """Wake every waiter of the test API; inside a REST request this happens once
        its answer has been written (see ``_outer_middleware``)."""
        if _IN_REQUEST.get():
            return
        async with self._changed:
            self._changed.notify_all()

    async def _wait(
        self,
        probe: Callable[[], T | None],
        timeout: float,  # noqa: ASYNC109 (the test API takes timeouts)
        what: str,
    ) -> T:
        """Wait until ``probe()`` returns something other than None (re-checked on every
        state change)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    result = probe()
                    if result is not None:
                        return result
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from None

    # ------------------------------------------------------------ state builders
    def add_role(self, name: str, permissions: int | Any = 0, *, mentionable: bool = False) -> Role:
        role = Role(
            self._ids.next(),
            name,
            _perm_value(permissions),
            position=len(self.guild.roles),
            mentionable=mentionable,
        )
        self.guild.roles[role.id] = role
        self._dispatch_soon(
            "GUILD_ROLE_CREATE",
            {"guild_id": str(self.guild.id), "role": role.to_dict()},
            Intent.GUILDS,
        )
        return role

    def add_user(
        self,
        name: str,
        *,
        roles: Iterable[Role] = (),
        permissions: int | Any | None = None,
        bot: bool = False,
    ) -> User:
        """A guild member. ``permissions`` gives them a personal role with those bits."""
        user = User(self._ids.next(), name, bot=bot)
        member_roles = list(roles)
        if permissions is not None:
            member_roles.append(self.add_role(f"{name}-role", permissions))
        self.guild.members[user.id] = Member(user, member_roles)
        if self._default_user is None and not bot:
            self._default_user = user
        self._dispatch_soon(
            "GUILD_MEMBER_ADD",
            {"guild_id": str(self.guild.id), **self.guild.members[user.id].to_dict()},
            Intent.GUILD_MEMBERS,
        )
        return user

    def add_channel(
        self, name: str, *, bot_deny: int | Any = 0, bot_allow: int | Any = 0
    ) -> Channel:
        channel = Channel(self._ids.next(), name, self.guild.id, position=len(self.guild.channels))
        self.guild.channels[channel.id] = channel
        if bot_deny or bot_allow:
            channel.overwrites[self.bot_user.id] = (
                1,
                _perm_value(bot_allow),
                _perm_value(bot_deny),
            )
        self._dispatch_soon("CHANNEL_CREATE", channel.to_dict(), Intent.GUILDS)
        return channel

    def set_bot_permissions(
        self, channel: Channel, *, deny: int | Any = 0, allow: int | Any = 0
    ) -> None:
        """A member overwrite for the bot in ``channel`` (e.g. deny ``Perm.ATTACH_FILES``)."""
        if deny or allow:
            channel.overwrites[self.bot_user.id] = (1, _perm_value(allow), _perm_value(deny))
        else:
            channel.overwrites.pop(self.bot_user.id, None)
        self._dispatch_soon("CHANNEL_UPDATE", channel.to_dict(), Intent.GUILDS)

    def set_member_roles(self, user: User, roles: Iterable[Role]) -> None:
        member = self.guild.members[user.id]
        member.roles = list(roles)
        self._dispatch_soon(
            "GUILD_MEMBER_UPDATE",
            {"guild_id": str(self.guild.id), **member.to_dict()},
            Intent.GUILD_MEMBERS,
        )

    def permissions_for(self, user: User, channel: Channel | None = None) -> int:
        """Discord's permission computation: roles, ADMINISTRATOR, then overwrites."""
        guild = self.guild
        if user.id == guild.owner_id:
            return Perm.ALL
        member = guild.members.get(user.id)
        if member is None:
            return 0
        perms = guild.everyone.permissions
        for role in member.roles:
            perms |= role.permissions
        if perms & Perm.ADMINISTRATOR:
            return Perm.ALL
        if channel is None:
            return perms
        ow = channel.overwrites
        if guild.id in ow:
            _, allow, deny = ow[guild.id]
            perms = (perms & ~deny) | allow
        allow = deny = 0
        for role in member.roles:
            if role.id in ow:
                allow |= ow[role.id][1]
                deny |= ow[role.id][2]
        perms = (perms & ~deny) | allow
        if user.id in ow:
            _, allow, deny = ow[user.id]
            perms = (perms & ~deny) | allow
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        if not perms & Perm.SEND_MESSAGES:
            perms &= ~(
                Perm.SEND_TTS_MESSAGES
                | Perm.MENTION_EVERYONE
                | Perm.EMBED_LINKS
                | Perm.ATTACH_FILES
            )
        return perms

    def create_attachment(
        self,
        filename: str,
        data: bytes,
        *,
        channel: Channel | None = None,
        content_type: str | None = None,
        ephemeral: bool = False,
    ) -> Attachment:
        """A stored attachment served at a localhost URL (a user's upload, for example)."""
        channel_id = (channel or self.channel).id
        att_id = self._ids.next()
        url = f"{self.base_url}/attachments/{channel_id}/{att_id}/{quote(filename, safe='')}"
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        att = Attachment(att_id, filename, bytes(data), ctype, url, ephemeral=ephemeral)
        self._attachments[att_id] = att
        return att

    def _channel(self, channel: Channel | int | None) -> Channel:
        if channel is None:
            return self.channel
        if isinstance(channel, Channel):
            return channel
        return self.guild.channels[int(channel)]

    def _user(self, user: User | None) -> User:
        if user is not None:
            return user
        if self._default_user is None:
            self.add_user("tester")
        assert self._default_user is not None
        return self._default_user

    # ------------------------------------------------------------------ records
    def synced_commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        return list(self._commands.get(guild_id, []))

    def count_requests(self, method: str, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        return sum(
            1 for r in self.requests if r.method == method.upper() and pattern.fullmatch(r.path)
        )

    def allow_unknown_route(self, method: str, path_regex: str) -> None:
        """Declare an unknown route a test hits on purpose (the fixture then ignores it)."""
        self._allowed_unknown.append((method.upper(), re.compile(path_regex)))

    def unexpected_unknown_routes(self) -> list[tuple[str, str]]:
        return [
            (m, p)
            for m, p in self.unknown_routes
            if not any(am in (m, "*") and ap.fullmatch(p) for am, ap in self._allowed_unknown)
        ]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        retry_after: float | None = None,
        via: bool = True,
        count: int = 1,
        code: int | None = None,
        message: str | None = None,
    ) -> FaultRule:
        """Answer the next ``count`` matching REST calls with ``status`` instead.

        ``path_regex`` must match the whole path after ``/api/v10``. A 429 carries
        ``{message, retry_after, global: false}`` and, with ``via``, the ``Via`` header
        without which discord.py does not retry (it assumes a Cloudflare ban)."""
        rule = FaultRule(
            method.upper(), re.compile(path_regex), status, retry_after, via, count, code, message
        )
        self._faults.append(rule)
        return rule

    def messages(
        self, channel: Channel | int | None = None, *, include_deleted: bool = False
    ) -> list[Message]:
        cid = self._channel(channel).id
        return [
            m
            for m in self._messages.values()
            if m.channel_id == cid and (include_deleted or not m.deleted)
        ]

    def message(self, message_id: int | str) -> Message:
        return self._messages[int(message_id)]

    async def wait_for_message(
        self,
        channel: Channel | int | None = None,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> Message:
        cid = self._channel(channel).id

        def probe() -> Message | None:
            for msg in self._messages.values():
                if (
                    msg.channel_id == cid
                    and not msg.deleted
                    and (predicate is None or predicate(msg))
                ):
                    return msg
            return None

        return await self._wait(probe, timeout, f"a message in channel {cid} matching predicate")

    def clock(self) -> float:
        """The emulator's clock: monotonic time plus what :meth:`advance_clock` added."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Let ``seconds`` pass for Discord's timers (interaction tokens, the 3 s answer
        deadline, the nonce window) without waiting. discord.py's own
        ``Interaction.is_expired()`` reads the wall clock and does not see this."""
        self._clock_offset += seconds

    def expire(self, handle: InteractionHandle) -> None:
        """From now on the interaction's token is invalid (as after 15 minutes)."""
        handle.expired = True

    # -------------------------------------------------------------- interactions
    def find_command(self, name: str, guild_id: int | None = None) -> dict[str, Any]:
        gid = self.guild.id if guild_id is None else guild_id
        for scope in (gid, None):
            for cmd in self._commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    return cmd
        synced = {str(scope): [c["name"] for c in cmds] for scope, cmds in self._commands.items()}
        raise LookupError(
            f"/{name} was not synced (global or guild {gid}); synced commands: {synced}"
        )

    def _resolve_value(
        self,
        opt: Mapping[str, Any],
        value: Any,
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
    ) -> Any:
        otype, oname = opt["type"], opt["name"]

        def fail(why: str) -> ValueError:
            return ValueError(f"option {oname!r} (type {otype}): {why}; got {value!r}")

        if otype == 3:
            if not isinstance(value, str):
                raise fail("expected a string")
            if len(value) < opt.get("min_length", 0) or len(value) > opt.get("max_length", 6000):
                raise fail("length outside min_length/max_length")
        elif otype == 4:
            if not isinstance(value, int) or isinstance(value, bool):
                raise fail("expected an integer")
        elif otype == 10:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise fail("expected a number")
        elif otype == 5 and not isinstance(value, bool):
            raise fail("expected a boolean")
        if otype in (4, 10):
            if "min_value" in opt and value < opt["min_value"]:
                raise fail(f"below min_value {opt['min_value']}")
            if "max_value" in opt and value > opt["max_value"]:
                raise fail(f"above max_value {opt['max_value']}")
        if opt.get("choices") and value not in [c["value"] for c in opt["choices"]]:
            raise fail(f"not one of the choices {[c['value'] for c in opt['choices']]}")
        if otype in (6, 9) and isinstance(value, User):
            resolved.setdefault("users", {})[str(value.id)] = value.to_dict()
            member = self.guild.members.get(value.id)
            if member is not None:
                resolved.setdefault("members", {})[str(value.id)] = member.to_dict(
                    with_user=False, permissions=self.permissions_for(value, channel)
                )
            return str(value.id)
        if otype in (8, 9) and isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.to_dict()
            return str(value.id)
        if otype == 7:
            if not isinstance(value, Channel):
                raise fail("expected a Channel")
            resolved.setdefault("channels", {})[str(value.id)] = {
                "id": str(value.id),
                "name": value.name,
                "type": value.type,
                "permissions": str(self.permissions_for(self.bot_user, value)),
                "parent_id": None,
            }
            return str(value.id)
        if otype == 11:
            if isinstance(value, tuple):
                value = self.create_attachment(value[0], value[1], channel=channel, ephemeral=True)
            if not isinstance(value, Attachment):
                raise fail("expected an Attachment or (filename, bytes)")
            resolved.setdefault("attachments", {})[str(value.id)] = value.to_dict()
            return str(value.id)
        if otype in (6, 8, 9):
            raise fail("expected a User or Role")
        return value

    def _build_options(
        self,
        label: str,
        definitions: list[dict[str, Any]],
        given: Mapping[str, Any],
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
        focused: str | None = None,
    ) -> list[dict[str, Any]]:
        by_name = {o["name"]: o for o in definitions}
        unknown = set(given) - set(by_name)
        if unknown:
            raise ValueError(
                f"{label} has no option(s) {sorted(unknown)}; it has {sorted(by_name)}"
            )
        out: list[dict[str, Any]] = []
        for opt in definitions:
            name = opt["name"]
            if name not in given:
                if opt.get("required") and focused is None:
                    raise ValueError(f"{label}: required option {name!r} missing")
                continue
            if name == focused:
                out.append(
                    {"name": name, "type": opt["type"], "value": str(given[name]), "focused": True}
                )
                continue
            value = self._resolve_value(opt, given[name], resolved, channel)
            out.append({"name": name, "type": opt["type"], "value": value})
        return out

    def _command_data(
        self,
        command: str,
        options: Mapping[str, Any],
        channel: Channel,
        focused: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(interaction data, command definition)`` for ``"name"`` or ``"name sub"``."""
        name, _, sub = command.partition(" ")
        cmd = self.find_command(name)
        resolved: dict[str, dict[str, Any]] = {}
        defs = cmd.get("options") or []
        if sub:
            subdef = next((o for o in defs if o["name"] == sub and o["type"] == 1), None)
            if subdef is None:
                raise LookupError(f"/{name} has no subcommand {sub!r}")
            inner = self._build_options(
                f"/{command}", subdef.get("options") or [], options, resolved, channel, focused
            )
            opts = [{"name": sub, "type": 1, "options": inner}]
        else:
            opts = self._build_options(f"/{command}", defs, options, resolved, channel, focused)
        data: dict[str, Any] = {"id": cmd["id"], "name": name, "type": 1, "options": opts}
        if resolved:
            data["resolved"] = resolved
        if "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        return data, cmd

    def _check_can_use(self, cmd: Mapping[str, Any], user: User, channel: Channel) -> None:
        needed = cmd.get("default_member_permissions")
        if needed is None:
            return
        perms = self.permissions_for(user, channel)
        if perms & Perm.ADMINISTRATOR:
            return
        if int(needed) & ~perms:
            raise PermissionError(
                f"{user.name} lacks default_member_permissions {needed} of /{cmd['name']}: "
                "Discord would not offer them the command"
            )

    def _interaction_payload(self, handle: InteractionHandle, locale: str) -> dict[str, Any]:
        channel = handle.channel
        member = self.guild.members[handle.user.id]
        payload: dict[str, Any] = {
            "id": str(handle.id),
            "application_id": str(self.application_id),
            "type": handle.type,
            "token": handle.token,
            "version": 1,
            "guild_id": str(self.guild.id),
            "guild": {"id": str(self.guild.id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "channel_id": str(channel.id),
            "channel": channel.to_dict(permissions=self.permissions_for(handle.user, channel)),
            "member": member.to_dict(permissions=self.permissions_for(handle.user, channel)),
            "app_permissions": str(self.permissions_for(self.bot_user, channel)),
            "locale": locale,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild.id)},
            "context": 0,
            "attachment_size_limit": handle.attachment_size_limit,
        }
        if handle.data:
            payload["data"] = handle.data
        if handle.message is not None:
            payload["message"] = handle.message.to_dict()
        return payload

    async def _send_interaction(
        self, handle: InteractionHandle, locale: str = "en-US", *, settle: bool = True
    ) -> InteractionHandle:
        if self._session is None:
            raise RuntimeError("no bot has identified on the gateway yet (await emu.wait_ready())")
        if settle:
            await self._settle()
        handle.payload = self._interaction_payload(handle, locale)
        self.interactions.append(handle)
        self._by_id[handle.id] = handle
        self._by_token[handle.token] = handle
        handle.sent = time.monotonic()

        def written() -> None:
            handle.sent = time.monotonic()

        await self.dispatch("INTERACTION_CREATE", handle.payload, on_send=written)
        return handle

    async def slash(
        self,
        command: str,
        *,
        user: User | None = None,
        options: Mapping[str, Any] | None = None,
        attachments: Mapping[str, tuple[str, bytes] | Attachment] | None = None,
        channel: Channel | int | None = None,
        attachment_size_limit: int | None = None,
        locale: str = "en-US",
        settle: bool = True,
    ) -> InteractionHandle:
        """Run ``/command`` (or ``"command sub"``) as ``user``. Option types, choices and
        limits come from the synced definition; ``attachments`` maps attachment options
        to ``(filename, bytes)`` uploads. ``settle=False`` sends at once, without waiting
        for the bot's REST calls in flight (many users at once, as in a load test)."""
        user = self._user(user)
        chan = self._channel(channel)
        given = dict(options or {})
        given.update(attachments or {})
        data, cmd = self._command_data(command, given, chan)
        self._check_can_use(cmd, user, chan)
        handle = InteractionHandle(
            self,
            type=APPLICATION_COMMAND,
            data=data,
            user=user,
            channel=chan,
            attachment_size_limit=attachment_size_limit or self.attachment_size_limit,
            name=f"/{command}",
        )
        return await self._send_interaction(handle, locale, settle=settle)

    async def autocomplete(
        self,
        command: str,
        option: str,
        value: str,
        *,
        user: User | None = None,
        options: Mapping[str, Any] | None = None,
        channel: Channel | int | None = None,
        timeout: float = 3.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> list[dict[str, Any]]:
        """Type ``value`` into ``option`` of ``/command``; the choices the bot returned."""
        user = self._user(user)
        chan = self._channel(channel)
        given = {**(options or {}), option: value}
        data, cmd = self._command_data(command, given, chan, focused=option)
        self._check_can_use(cmd, user, chan)
        handle = InteractionHandle(
            self,
            type=AUTOCOMPLETE,
            data=data,
            user=user,
            channel=chan,
            attachment_size_limit=self.attachment_size_limit,
            name=f"/{command} autocomplete {option}",
        )
        await self._send_interaction(handle)
        callback = await handle.first_response(timeout)
        if callback.type != 8:
            raise AssertionError(f"autocomplete answered with callback type {callback.type}")
        return list(callback.data.get("choices") or [])

    async def press(
        self,
        message: Message | int,
        custom_id: str,
        *,
        user: User | None = None,
        values: list[str] | None = None,
    ) -> InteractionHandle:
        """Click a button (or pick ``values`` in a select) on a message."""
        msg = message if isinstance(message, Message) else self.message(message)
        if msg.deleted:
            raise LookupError(f"message {msg.id} was deleted")
        comp = msg.component(custom_id)
        if comp.disabled:
            raise ValueError(f"component {custom_id!r} is disabled: Discord would not send it")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": comp.type}
        if comp.raw.get("id") is not None:
            data["id"] = comp.raw["id"]
        if comp.type != 2:
            data["values"] = list(values or [])
        handle = InteractionHandle(
            self,
            type=MESSAGE_COMPONENT,
            data=data,
            user=self._user(user),
            channel=self.guild.channels[msg.channel_id],
            attachment_size_limit=self.attachment_size_limit,
            message=msg,
            name=f"press {custom_id}",
        )
        return await self._send_interaction(handle)

    async def select(
        self, message: Message | int, custom_id: str, values: list[str], *, user: User | None = None
    ) -> InteractionHandle:
        return await self.press(message, custom_id, user=user, values=values)

    async def submit_modal(
        self,
        source: InteractionHandle | str,
        values: Mapping[str, str | list[str]] | None = None,
        *,
        user: User | None = None,
    ) -> InteractionHandle:
        """Submit the modal the bot opened (type 9) with ``values`` by text input custom_id."""
        if isinstance(source, InteractionHandle):
            opener = source
        else:
            opener = next(
                (
                    h
                    for h in reversed(self.interactions)
                    if h.modal and h.modal.get("custom_id") == source
                ),
                None,
            )
            if opener is None:
                raise LookupError(f"no modal with custom_id {source!r} was opened")
        modal = opener.modal
        if modal is None:
            raise LookupError(f"{opener!r} did not answer with a modal")
        values = dict(values or {})
        counter = itertools.count(1)

        def submitted(comp: Mapping[str, Any]) -> dict[str, Any]:
            ctype = comp["type"]
            out: dict[str, Any] = {"type": ctype, "id": comp.get("id") or next(counter)}
            if ctype == 1:
                out["components"] = [submitted(c) for c in comp.get("components") or []]
            elif ctype == 18:
                out["component"] = submitted(comp["component"])
            elif "custom_id" in comp:
                cid = comp["custom_id"]
                out["custom_id"] = cid
                if ctype == 4:
                    value = values.pop(cid, comp.get("value") or "")
                    if comp.get("required", True) and not value:
                        raise ValueError(f"text input {cid!r} is required")
                    lo, hi = comp.get("min_length", 0), comp.get("max_length", 4000)
                    if value and not lo <= len(value) <= hi:
                        raise ValueError(f"text input {cid!r} takes {lo}..{hi} characters")
                    out["value"] = value
                else:
                    picked = values.pop(cid, [])
                    out["values"] = [picked] if isinstance(picked, str) else list(picked)
            return out

        components = [submitted(c) for c in modal.get("components") or []]
        if values:
            raise ValueError(f"modal {modal.get('custom_id')!r} has no inputs {sorted(values)}")
        handle = InteractionHandle(
            self,
            type=MODAL_SUBMIT,
            data={"custom_id": modal["custom_id"], "components": components},
            user=user or opener.user,
            channel=opener.channel,
            attachment_size_limit=opener.attachment_size_limit,
            message=opener.message,
            parent=opener,
            name=f"modal {modal['custom_id']}",
        )
        return await self._send_interaction(handle)

    async def user_message(
        self, content: str, *, user: User | None = None, channel: Channel | int | None = None
    ) -> Message:
        """A message a user posts in a channel (dispatched as MESSAGE_CREATE)."""
        author = self._user(user)
        chan = self._channel(channel)
        msg = self._store_message(
            chan,
            author,
            MessageVersion(content, [], [], [], 0, None, _now()),
        )
        await self._message_event("MESSAGE_CREATE", msg)
        await self._notify()
        return msg

    # ------------------------------------------------------------------ gateway
    async def wait_ready(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> GatewaySession:
        """Until a client is connected and has had READY + GUILD_CREATE (or RESUMED)."""

        def probe() -> GatewaySession | None:
            s = self._session
            return s if s is not None and s.ready and s.ws is not None and not s.ws.closed else None

        return await self._wait(probe, timeout, "a bot ready on the gateway")

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> None:
        """Until ``predicate()`` holds, re-checked on every emulator state change (e.g.
        ``lambda: emu.resume_count == 1``)."""
        await self._wait(lambda: True if predicate() else None, timeout, "a condition")

    async def drop_gateway(self, code: int = 4000, *, invalidate: bool = False) -> None:
        """Close the bot's websocket; discord.py reconnects and RESUMEs (or, with
        ``invalidate``, is told the session is gone and IDENTIFYs again: discord.py's
        ``Client.before_identify_hook`` sleeps 5 s first unless the bot overrides it).
        Events sent meanwhile are queued and replayed on resume; after ``invalidate``
        there is no session until the new IDENTIFY."""
        session = self._session
        if session is None or session.ws is None:
            raise RuntimeError("no gateway connection to drop")
        async with session.lock:
            ws, session.ws = session.ws, None
            if invalidate:
                self._session = None
        await ws.close(code=code)
        await self._notify()

    async def send_reconnect(self) -> None:
        """op 7 RECONNECT: the client closes and resumes."""
        session = self._session
        if session is None or session.ws is None:
            raise RuntimeError("no gateway connection")
        conn = next(c for c in self._conns if c.ws is session.ws)
        await conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def _settle(self) -> None:
        """Let the bot digest the answers it already got before a user acts again.

        In a test the "user" reacts within microseconds, where a person needs to see
        the message first: a click could reach the bot before the bot has handled the
        answer that registered the clicked view (with the bot in the same event loop,
        a matter of a few loop turns). So wait for the bot's REST calls in flight, then
        for a gateway round trip (op 1 "heartbeat now", answered by the client's op 1)."""
        with contextlib.suppress(TimeoutError):
            await self._wait(lambda: True if self._inflight == 0 else None, 5.0, "REST calls")
        session = self._session
        conn = None if session is None else self._conn_of(session.ws)
        if conn is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.heartbeat_waiters.append(fut)
        if await conn.send({"op": 1, "d": None, "s": None, "t": None}):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await fut

    def _conn_of(self, ws: web.WebSocketResponse | None) -> _Conn | None:
        return next((c for c in self._conns if ws is not None and c.ws is ws), None)

    async def dispatch(
        self,
        event: str,
        data: Mapping[str, Any],
        intent: int | None = None,
        *,
        on_send: Callable[[], None] | None = None,
    ) -> bool:
        """Send a dispatch (op 0) to the current session; queued if disconnected.

        Returns False when the event was not sent because the session lacks ``intent``.
        ``on_send`` is called just before the event is written to the socket."""
        session = self._session
        if session is None:
            raise RuntimeError("no bot has identified on the gateway yet")
        if intent is not None and not session.intents & intent:
            return False
        async with session.lock:
            session.seq += 1
            payload = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.events.append(payload)
            ws = session.ws
            if ws is not None:
                conn = next((c for c in self._conns if c.ws is ws), None)
                if conn is not None:
                    await conn.send(payload, on_send)
        return True

    def _dispatch_soon(self, event: str, data: Mapping[str, Any], intent: int) -> None:
        """State builders are synchronous: tell a connected bot in the background."""
        if self._session is None:
            return
        task = asyncio.get_running_loop().create_task(self.dispatch(event, data, intent))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        _skip_spec(request)
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _Conn(ws)
        self._conns.add(conn)
        log.debug("gateway: connection %x opened", id(ws))
        await conn.send(
            {
                "op": 10,
                "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                "s": None,
                "t": None,
            }
        )
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_gateway(conn, json.loads(msg.data))
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            log.debug("gateway: connection %x closed (code %s)", id(ws), ws.close_code)
            self._conns.discard(conn)
            session = conn.session
            if session is not None and session.ws is ws:
                async with session.lock:
                    if session.ws is ws:
                        session.ws = None
            await self._notify()
        return ws

    async def _on_gateway(self, conn: _Conn, msg: dict[str, Any]) -> None:
        op, data = msg.get("op"), msg.get("d")
        self.gateway_received.append(msg)
        log.debug("gateway: connection %x sent op %s", id(conn.ws), op)
        if op == 1:
            for fut in conn.heartbeat_waiters:
                if not fut.done():
                    fut.set_result(None)
            conn.heartbeat_waiters.clear()
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op == 8:
            await self._member_chunk(conn, data or {})
        elif op in (3, 4):
            pass  # presence / voice state updates: accepted, ignored
        else:
            log.warning("gateway: unexpected op %s", op)

    async def _identify(self, conn: _Conn, data: Mapping[str, Any]) -> None:
        if data.get("token") != self.bot_token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & Intent.PRIVILEGED & ~self.allowed_privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        old = self._session
        if old is not None and old.ws is not None and old.ws is not conn.ws:
            with contextlib.suppress(Exception):
                await old.ws.close(code=4000)
        session = GatewaySession(id=secrets.token_hex(16), intents=intents)
        async with session.lock:
            self._session = session
            conn.session = session
            self.identify_count += 1
            ready = {
                "v": 10,
                "user": {
                    **self.bot_user.to_dict(),
                    "verified": True,
                    "mfa_enabled": False,
                    "email": None,
                },
                "guilds": [{"id": str(self.guild.id), "unavailable": True}],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "user_settings": {},
                "geo_ordered_rtc_regions": ["emulated"],
                "_trace": ["discord-emulator"],
            }
            if "shard" in data:
                ready["shard"] = data["shard"]
            for event, payload in (("READY", ready), ("GUILD_CREATE", self._guild_create())):
                session.seq += 1
                frame = {"op": 0, "t": event, "s": session.seq, "d": payload}
                session.events.append(frame)
                await conn.send(frame)
            session.ws = conn.ws
            session.ready = True
        await self._notify()

    def _guild_create(self) -> dict[str, Any]:
        g = self.guild
        with_members = bool(self._session and self._session.intents & Intent.GUILD_MEMBERS)
        members = list(g.members.values()) if with_members else [g.members[self.bot_user.id]]
        return {
            "id": str(g.id),
            "name": g.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(g.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": str(self.channel.id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "application_id": None,
            "vanity_url_code": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "features": [],
            "roles": [r.to_dict() for r in g.roles.values()],
            "emojis": [],
            "stickers": [],
            "channels": [c.to_dict() for c in g.channels.values()],
            "threads": [],
            "members": [m.to_dict() for m in members],
            "member_count": len(g.members),
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
            "unavailable": False,
            "lazy": True,
            "joined_at": _iso(g.members[self.bot_user.id].joined_at),
        }

    async def _resume(self, conn: _Conn, data: Mapping[str, Any]) -> None:
        session = self._session
        if (
            session is None
            or data.get("session_id") != session.id
            or data.get("token") != self.bot_token
        ):
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        since = int(data.get("seq") or 0)
        async with session.lock:
            if session.ws is not None and session.ws is not conn.ws:
                with contextlib.suppress(Exception):
                    await session.ws.close(code=4000)
            for frame in session.events:
                if frame["s"] > since:
                    await conn.send(frame)
            session.seq += 1
            resumed = {
                "op": 0,
                "t": "RESUMED",
                "s": session.seq,
                "d": {"_trace": ["discord-emulator"]},
            }
            session.events.append(resumed)
            await conn.send(resumed)
            conn.session = session
            session.ws = conn.ws
            self.resume_count += 1
        await self._notify()

    async def _member_chunk(self, conn: _Conn, data: Mapping[str, Any]) -> None:
        session = self._session
        if session is None:
            return
        members = list(self.guild.members.values())
        user_ids = data.get("user_ids")
        if user_ids:
            wanted = {int(u) for u in ([user_ids] if isinstance(user_ids, str | int) else user_ids)}
            members = [m for m in members if m.user.id in wanted]
        chunk: dict[str, Any] = {
            "guild_id": str(self.guild.id),
            "members": [m.to_dict() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def _message_event(self, event: str, msg: Message) -> None:
        """MESSAGE_CREATE / UPDATE / DELETE to the bot, as Discord would send them."""
        if self._session is None or msg.ephemeral:
            return
        if event == "MESSAGE_DELETE":
            data: dict[str, Any] = {
                "id": str(msg.id),
                "channel_id": str(msg.channel_id),
                "guild_id": str(self.guild.id),
            }
        else:
            data = msg.to_dict()
            data["guild_id"] = str(self.guild.id)
            member = self.guild.members.get(msg.author.id)
            if member is not None and msg.webhook_id is None:
                data["member"] = member.to_dict(with_user=False)
            visible = (
                self._session.intents & Intent.MESSAGE_CONTENT
                or msg.author.id == self.bot_user.id
                or self.bot_user.id in msg.pinged_user_ids()
            )
            if not visible:
                data.update(content="", embeds=[], attachments=[], components=[])
        await self.dispatch(event, data, Intent.GUILD_MESSAGES)

    # -------------------------------------------------------------- middlewares
    @web.middleware
    async def _outer_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            _skip_spec(request)  # gateway, attachment downloads: not in the document
            return await handler(request)
        record = RequestRecord(
            request.method, request.path[len(API_PREFIX) :], dict(request.query), time.monotonic()
        )
        self.requests.append(record)
        token = _IN_REQUEST.set(True)
        self._inflight += 1
        try:
            response = await handler(request)
            record.status = response.status
            # Put the answer on the wire before waking the test: a test that reacts to
            # this change (say, clicks a button the bot just added) must not overtake the
            # answer that tells the bot about it, as no Discord user could.
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write_eof()
        finally:
            _IN_REQUEST.reset(token)
            self._inflight -= 1
            await self._notify()
        return response

    @web.middleware
    async def _inner_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        path = request.path[len(API_PREFIX) :]
        fault = self._take_fault(request.method, path)
        if fault is not None:
            return self._fault_response(request, fault)
        try:
            return await handler(request)
        except DiscordAPIError as err:
            reason = getattr(err, "reason", None)
            if reason:
                self.rejections.append((request.method, path, reason))
            return _json_response(
                {"message": err.message, "code": err.code}, err.status, err.headers
            )
        except web.HTTPException:
            raise
        except Exception as exc:
            # An emulator bug, or a payload shape it did not expect: answer at once (a 500
            # would make discord.py retry for seconds) and let the fixture fail the test.
            log.exception("discord emulator failed on %s %s", request.method, path)
            self.internal_errors.append(f"{request.method} {path}: {exc!r}")
            return _json_response({"message": "Invalid Form Body", "code": 50035}, 400)

    def _take_fault(self, method: str, path: str) -> FaultRule | None:
        for rule in self._faults:
            if rule.remaining > 0 and rule.method in (method, "*") and rule.pattern.fullmatch(path):
                rule.remaining -= 1
                rule.hits += 1
                return rule
        return None

    def _fault_response(self, request: web.Request, rule: FaultRule) -> web.Response:
        headers: dict[str, str] = {}
        if rule.status == 429:
            retry_after = 0.01 if rule.retry_after is None else rule.retry_after
            body: dict[str, Any] = {
                "message": rule.message or "You are being rate limited.",
                "retry_after": retry_after,
                "global": False,
                "code": rule.code or 0,
            }
            headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
            headers["X-RateLimit-Scope"] = "user"
        else:
            body = {
                "message": rule.message or f"{rule.status}: scripted error",
                "code": rule.code or 0,
            }
            if rule.status >= 500:
                _skip_spec(request)  # the document describes no 5xx answers
        if rule.via:
            headers["Via"] = "1.1 google"
        return _json_response(body, rule.status, headers)

    # -------------------------------------------------------------------- routes
    def _add_routes(self, app: web.Application) -> None:
        p = API_PREFIX
        r = app.router
        r.add_get("/gateway", self._gateway)
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._download)
        r.add_get(p + "/gateway", self._get_gateway)
        r.add_get(p + "/gateway/bot", self._get_gateway)
        r.add_get(p + "/users/@me", self._get_me)
        r.add_get(p + "/users/{user_id}", self._get_user)
        r.add_get(p + "/oauth2/applications/@me", self._get_application)
        for base in (
            p + "/applications/{application_id}/commands",
            p + "/applications/{application_id}/guilds/{guild_id}/commands",
        ):
            r.add_get(base, self._list_commands)
            r.add_put(base, self._put_commands)
            r.add_post(base, self._upsert_command)
            r.add_get(base + "/{command_id}", self._get_command)
            r.add_patch(base + "/{command_id}", self._patch_command)
            r.add_delete(base + "/{command_id}", self._delete_command)
        r.add_post(p + "/interactions/{interaction_id}/{token}/callback", self._callback)
        r.add_post(p + "/webhooks/{application_id}/{token}", self._execute_webhook)
        msg_route = p + "/webhooks/{application_id}/{token}/messages/{message_id}"
        r.add_get(msg_route, self._get_webhook_message)
        r.add_patch(msg_route, self._patch_webhook_message)
        r.add_delete(msg_route, self._delete_webhook_message)
        r.add_get(p + "/channels/{channel_id}", self._get_channel)
        r.add_get(p + "/channels/{channel_id}/messages", self._list_messages)
        r.add_post(p + "/channels/{channel_id}/messages", self._create_message)
        r.add_get(p + "/channels/{channel_id}/messages/{message_id}", self._get_message)
        r.add_patch(p + "/channels/{channel_id}/messages/{message_id}", self._patch_message)
        r.add_delete(p + "/channels/{channel_id}/messages/{message_id}", self._delete_message)
        r.add_post(p + "/channels/{channel_id}/typing", self._typing)
        r.add_route("*", "/{tail:.*}", self._unknown)

    async def _unknown(self, request: web.Request) -> web.Response:
        _skip_spec(request)
        path = (
            request.path[len(API_PREFIX) :] if request.path.startswith(API_PREFIX) else request.path
        )
        self.unknown_routes.append((request.method, path))
        log.warning("discord emulator: unknown route %s %s", request.method, request.path)
        return _json_response({"message": "404: Not Found", "code": 0}, 404)

    async def _download(self, request: web.Request) -> web.Response:
        att_id = request.match_info["attachment_id"]
        att = self._attachments.get(int(att_id)) if att_id.isdigit() else None
        if att is None or att.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        self.attachment_downloads.append(att.filename)
        return web.Response(body=att.data, headers={"Content-Type": att.content_type})

    # -- auth ------------------------------------------------------------------
    def _require_bot(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.bot_token}":
            raise DiscordAPIError(401, 0, "401: Unauthorized")

    def _require_app(self, request: web.Request) -> None:
        self._require_bot(request)
        if request.match_info.get("application_id") != str(self.application_id):
            raise DiscordAPIError(403, 50001, "Missing Access")

    async def _read(self, request: web.Request) -> tuple[Any, list[_Upload]]:
        body = await request.read()
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            payload, uploads = _parse_multipart(ctype, body)
            return payload if payload is not None else {}, uploads
        if not body:
            return {}, []
        try:
            return json.loads(body), []
        except ValueError as exc:
            raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.") from exc

    # -- users / application ---------------------------------------------------
    async def _get_gateway(self, request: web.Request) -> web.Response:
        """``GET /gateway`` and ``/gateway/bot`` (an AutoShardedBot asks for the latter)."""
        if not request.path.endswith("/bot"):
            return _json_response({"url": self.gateway_url})
        self._require_bot(request)
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return _json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_me(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        return _json_response(
            {
                **self.bot_user.to_dict(),
                "bot": True,
                "mfa_enabled": False,
                "locale": "en-US",
                "premium_type": 0,
                "email": None,
                "verified": True,
                "bio": "",
            }
        )

    async def _get_user(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        uid = request.match_info["user_id"]
        member = self.guild.members.get(int(uid)) if uid.isdigit() else None
        if member is None:
            raise DiscordAPIError(404, 10013, "Unknown User")
        return _json_response(member.user.to_dict())

    async def _get_application(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        return _json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_user.name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot": self.bot_user.to_dict(),
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "flags_new": "0",
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "owner": self.owner.to_dict(),
                "approximate_guild_count": 1,
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "team": None,
                "eligible_oauth2_scopes": ["applications.commands", "bot"],
                "tags": [],
                "rpc_origins": [],
            }
        )

    # -- application commands ----------------------------------------------------
    def _scope(self, request: web.Request) -> int | None:
        self._require_app(request)
        gid = request.match_info.get("guild_id")
        if gid is None:
            return None
        if gid != str(self.guild.id):
            raise DiscordAPIError(403, 50001, "Missing Access")
        return int(gid)

    def _stored_command(
        self, scope: int | None, payload: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        if not isinstance(payload, Mapping) or not payload.get("name"):
            raise _invalid_form("application command without a name")
        ctype = payload.get("type", 1)
        description = payload.get("description") or ""
        if ctype == 1 and not description:
            raise _invalid_form(f"slash command {payload.get('name')!r} without description")
        perms = payload.get("default_member_permissions")
        cmd: dict[str, Any] = {
            "id": previous["id"] if previous else str(self._ids.next()),
            "application_id": str(self.application_id),
            "version": str(self._ids.next()),
            "default_member_permissions": None if perms is None else str(perms),
            "type": ctype,
            "name": payload["name"],
            "description": description,
            "dm_permission": bool(payload.get("dm_permission", True)),
            "nsfw": bool(payload.get("nsfw", False)),
        }
        for key in ("name_localizations", "description_localizations"):
            if payload.get(key) is not None:
                cmd[key] = payload[key]
        if payload.get("contexts") is not None:
            cmd["contexts"] = payload["contexts"]
        cmd["integration_types"] = payload.get("integration_types") or [0]
        if payload.get("options"):
            cmd["options"] = [_option_response(o) for o in payload["options"]]
        if scope is not None:
            cmd["guild_id"] = str(scope)
        return cmd

    async def _list_commands(self, request: web.Request) -> web.Response:
        return _json_response(self.synced_commands(self._scope(request)))

    async def _put_commands(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        payload, _ = await self._read(request)
        if not isinstance(payload, list):
            raise _invalid_form("bulk overwrite body must be a list")
        old = {(c["name"], c["type"]): c for c in self._commands.get(scope, [])}
        stored = [
            self._stored_command(scope, p, old.get((p.get("name"), p.get("type", 1))))
            for p in payload
        ]
        names = [(c["name"], c["type"]) for c in stored]
        if len(set(names)) != len(names):
            raise _invalid_form("duplicate application command names")
        self._commands[scope] = stored
        self.sync_counts[scope] += 1
        await self._notify()
        return _json_response(stored)

    async def _upsert_command(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        payload, _ = await self._read(request)
        cmds = self._commands.setdefault(scope, [])
        prev = next(
            (
                c
                for c in cmds
                if c["name"] == payload.get("name") and c["type"] == payload.get("type", 1)
            ),
            None,
        )
        cmd = self._stored_command(scope, payload, prev)
        if prev is not None:
            cmds[cmds.index(prev)] = cmd
        else:
            cmds.append(cmd)
        await self._notify()
        return _json_response(cmd, 200 if prev else 201)

    def _command_by_id(self, request: web.Request) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        cmds = self._commands.get(self._scope(request), [])
        cid = request.match_info["command_id"]
        for cmd in cmds:
            if cmd["id"] == cid:
                return cmds, cmd
        raise DiscordAPIError(404, 10063, "Unknown application command")

    async def _get_command(self, request: web.Request) -> web.Response:
        return _json_response(self._command_by_id(request)[1])

    async def _patch_command(self, request: web.Request) -> web.Response:
        cmds, cmd = self._command_by_id(request)
        payload, _ = await self._read(request)
        merged = {**cmd, **payload}
        new = self._stored_command(self._scope(request), merged, cmd)
        cmds[cmds.index(cmd)] = new
        return _json_response(new)

    async def _delete_command(self, request: web.Request) -> web.Response:
        cmds, cmd = self._command_by_id(request)
        cmds.remove(cmd)
        return _no_content()

    # -- messages: shared -----------------------------------------------------------
    def _check_payload(
        self, payload: Mapping[str, Any], uploads: list[_Upload], *, creating: bool
    ) -> None:
        """Discord's form checks that matter for a bot (limits, empty messages)."""
        if not isinstance(payload, Mapping):
            raise _invalid_form("message payload must be an object")
        for key, kind in (
            ("content", str),
            ("embeds", list),
            ("components", list),
            ("attachments", list),
            ("allowed_mentions", dict),
            ("flags", int),
        ):
            if payload.get(key) is not None and not isinstance(payload[key], kind):
                raise _invalid_form(f"{key} must be a {kind.__name__}")
        content = payload.get("content") or ""
        if len(content) > 2000:
            raise _invalid_form(f"content is {len(content)} characters (max 2000)")
        embeds = payload.get("embeds") or []
        if len(embeds) > 10:
            raise _invalid_form("more than 10 embeds")
        total = 0
        for embed in embeds:
            for key, limit in (("title", 256), ("description", 4096)):
                text = embed.get(key) or ""
                total += len(text)
                if len(text) > limit:
                    raise _invalid_form(f"embed {key} is {len(text)} characters (max {limit})")
            fields = embed.get("fields") or []
            if len(fields) > 25:
                raise _invalid_form("more than 25 embed fields")
            for f in fields:
                if len(f.get("name") or "") > 256 or len(f.get("value") or "") > 1024:
                    raise _invalid_form("embed field name > 256 or value > 1024")
                total += len(f.get("name") or "") + len(f.get("value") or "")
            footer = (embed.get("footer") or {}).get("text") or ""
            author = (embed.get("author") or {}).get("name") or ""
            if len(footer) > 2048 or len(author) > 256:
                raise _invalid_form("embed footer > 2048 or author name > 256")
            total += len(footer) + len(author)
        if total > 6000:
            raise _invalid_form(f"embeds hold {total} characters (max 6000)")
        components = payload.get("components") or []
        flags = payload.get("flags") or 0
        if not flags & FLAG_COMPONENTS_V2 and len(components) > 5:
            raise _invalid_form("more than 5 action rows")
        seen: set[str] = set()
        for comp in _walk_components(components):
            if comp.get("type") == 1 and len(comp.get("components") or []) > 5:
                raise _invalid_form("more than 5 components in an action row")
            cid = comp.get("custom_id")
            if cid is not None:
                if len(cid) > 100 or cid in seen:
                    raise _invalid_form(f"custom_id {cid!r} too long or duplicated")
                seen.add(cid)
            if len(comp.get("label") or "") > 80:
                raise _invalid_form("component label longer than 80")
        am = payload.get("allowed_mentions")
        if am:
            parse = am.get("parse") or []
            if ("users" in parse and am.get("users")) or ("roles" in parse and am.get("roles")):
                raise _invalid_form("allowed_mentions parse and users/roles are mutually exclusive")
        if len(uploads) > 10 or len(payload.get("attachments") or []) > 10:
            raise _invalid_form("more than 10 attachments")
        if creating and not (
            content
            or embeds
            or uploads
            or components
            or payload.get("sticker_ids")
            or payload.get("poll")
        ):
            raise DiscordAPIError(400, 50006, "Cannot send an empty message")

    def _check_sizes(self, uploads: list[_Upload], limit: int) -> None:
        for up in uploads:
            if len(up.data) > limit:
                raise DiscordAPIError(413, 40005, "Request entity too large")

    def _attachments_for(
        self,
        channel: Channel,
        payload: Mapping[str, Any],
        uploads: list[_Upload],
        existing: list[Attachment] | None,
        *,
        ephemeral: bool,
    ) -> list[Attachment]:
        """Discord's rule: ``attachments`` in the payload lists the existing attachments
        to keep (by id) and describes new ones (id = index of ``files[n]``)."""
        by_index = {u.index: u for u in uploads}
        used: set[int] = set()
        result: list[Attachment] = []
        described = payload.get("attachments")

        def store(up: _Upload, item: Mapping[str, Any]) -> Attachment:
            att = self.create_attachment(
                item.get("filename") or up.filename, up.data, channel=channel, ephemeral=ephemeral
            )
            att.description = item.get("description")
            used.add(up.index)
            return att

        if described is not None:
            keep = {str(a.id): a for a in existing or []}
            for item in described:
                aid = str(item.get("id"))
                if aid in keep:
                    result.append(keep[aid])
                elif aid.isdigit() and int(aid) in by_index:
                    result.append(store(by_index[int(aid)], item))
                else:
                    raise _invalid_form(f"attachment id {aid} is neither kept nor uploaded")
        else:
            result = list(existing or [])
        for index in sorted(by_index):
            if index not in used:
                result.append(store(by_index[index], {}))
        if len(result) > 10:
            raise _invalid_form("more than 10 attachments")
        return result

    def _version(
        self,
        channel: Channel,
        payload: Mapping[str, Any],
        uploads: list[_Upload],
        *,
        flags: int,
        base: MessageVersion | None = None,
    ) -> MessageVersion:
        ephemeral = bool(flags & FLAG_EPHEMERAL)
        if base is None:
            return MessageVersion(
                content=payload.get("content") or "",
                embeds=[dict(e) for e in payload.get("embeds") or []],
                raw_components=list(payload.get("components") or []),
                attachment_records=self._attachments_for(
                    channel, payload, uploads, None, ephemeral=ephemeral
                ),
                flags=flags,
                allowed_mentions=payload.get("allowed_mentions"),
                at=_now(),
            )
        attachments = base.attachment_records
        if "attachments" in payload or uploads:
            attachments = self._attachments_for(
                channel, payload, uploads, base.attachment_records, ephemeral=ephemeral
            )
        return MessageVersion(
            content=(payload.get("content") or "") if "content" in payload else base.content,
            embeds=[dict(e) for e in payload.get("embeds") or []]
            if "embeds" in payload
            else base.embeds,
            raw_components=list(payload.get("components") or [])
            if "components" in payload
            else base.raw_components,
            attachment_records=attachments,
            flags=flags,
            allowed_mentions=payload.get("allowed_mentions"),
            at=_now(),
        )

    def _store_message(
        self,
        channel: Channel,
        author: User,
        version: MessageVersion,
        **extra: Any,
    ) -> Message:
        msg = Message(
            id=self._ids.next(),
            channel_id=channel.id,
            author=author,
            versions=[version],
            created_at=version.at,
            guild=self.guild,
            author_permissions=self.permissions_for(author, channel),
            **extra,
        )
        self._messages[msg.id] = msg
        channel.last_message_id = msg.id
        return msg

    async def _edit(
        self,
        msg: Message,
        payload: Mapping[str, Any],
        uploads: list[_Upload],
        limit: int,
    ) -> Message:
        self._check_payload(payload, uploads, creating=False)
        self._check_sizes(uploads, limit)
        flags = msg.flags & ~FLAG_LOADING
        if payload.get("flags") is not None:
            flags = (flags & ~_EDITABLE_FLAGS) | (int(payload["flags"]) & _EDITABLE_FLAGS)
        channel = self.guild.channels[msg.channel_id]
        was_loading = msg.loading
        msg.versions.append(self._version(channel, payload, uploads, flags=flags, base=msg.current))
        if not was_loading:
            msg.edited_at = msg.current.at
        await self._message_event("MESSAGE_UPDATE", msg)
        await self._notify()
        return msg

    async def _delete(self, msg: Message) -> None:
        msg.deleted = True
        await self._message_event("MESSAGE_DELETE", msg)
        await self._notify()

    # -- interactions: callback and webhooks ------------------------------------------
    def _interaction_metadata(self, handle: InteractionHandle) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": str(handle.id),
            "type": handle.type,
            "user": handle.user.to_dict(),
            "authorizing_integration_owners": {"0": str(self.guild.id)},
        }
        if handle.type == APPLICATION_COMMAND:
            meta["name"] = handle.data.get("name")
            meta["command_type"] = 1
        elif handle.type == MESSAGE_COMPONENT and handle.message is not None:
            meta["interacted_message_id"] = str(handle.message.id)
        elif handle.type == MODAL_SUBMIT and handle.parent is not None:
            meta["triggering_interaction_metadata"] = self._interaction_metadata(handle.parent)
        if handle.original is not None:
            meta["original_response_message_id"] = str(handle.original.id)
        return meta

    def _interaction_message(
        self,
        handle: InteractionHandle,
        payload: Mapping[str, Any],
        uploads: list[_Upload],
        flags: int,
    ) -> Message:
        version = self._version(handle.channel, payload, uploads, flags=flags)
        is_original = handle.original is None
        return self._store_message(
            handle.channel,
            self.bot_user,
            version,
            type=20 if handle.type == APPLICATION_COMMAND and is_original else 0,
            webhook_id=self.application_id,
            application_id=self.application_id,
            interaction_metadata=self._interaction_metadata(handle),
            tts=bool(payload.get("tts", False)),
        )

    async def _callback(self, request: web.Request) -> web.Response:
        iid = request.match_info["interaction_id"]
        handle = self._by_id.get(int(iid)) if iid.isdigit() else None
        if handle is None or handle.token != request.match_info["token"]:
            raise DiscordAPIError(404, 10062, "Unknown interaction")
        latency = time.monotonic() - handle.created
        late = self.callback_deadline is not None and handle.age() > self.callback_deadline
        if handle.callback is None and late:
            handle.refused.append(("callback", 10062))
            log.warning("callback to %r after %.2fs: the interaction failed", handle, handle.age())
            raise DiscordAPIError(404, 10062, "Unknown interaction")
        if handle.is_expired():
            handle.refused.append(("callback", 50027))
            raise DiscordAPIError(401, 50027, "Invalid Webhook Token")
        if handle.callback is not None:
            handle.refused.append(("callback", 40060))
            raise DiscordAPIError(400, 40060, "Interaction has already been acknowledged.")
        payload, uploads = await self._read(request)
        ctype = payload.get("type") if isinstance(payload, Mapping) else None
        data = dict(payload.get("data") or {}) if isinstance(payload, Mapping) else {}
        allowed = {
            APPLICATION_COMMAND: {4, 5, 9},
            MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
            MODAL_SUBMIT: {4, 5, 6, 7} if handle.message is not None else {4, 5},
            AUTOCOMPLETE: {8},
        }[handle.type]
        if ctype not in allowed:
            raise _invalid_form(
                f"callback type {ctype} not valid for interaction type {handle.type}"
            )
        resource: dict[str, Any] | None = None
        if ctype in (4, 7):
            self._check_payload(data, uploads, creating=ctype == 4)
            self._check_sizes(uploads, handle.attachment_size_limit)
        if ctype == 8:
            choices = data.get("choices") or []
            if len(choices) > 25:
                raise _invalid_form("more than 25 autocomplete choices")
        if ctype == 9 and not all(data.get(k) for k in ("custom_id", "title", "components")):
            raise _invalid_form("modal needs custom_id, title and components")
        handle.callback = Callback(
            ctype,
            data,
            latency,
            [(u.filename, u.data) for u in sorted(uploads, key=lambda u: u.index)],
        )
        interaction: dict[str, Any] = {"id": str(handle.id), "type": handle.type}
        if ctype == 4:
            flags = int(data.get("flags") or 0) & _WEBHOOK_SENDABLE_FLAGS
            msg = self._interaction_message(handle, data, uploads, flags)
            handle.original = msg
            await self._message_event("MESSAGE_CREATE", msg)
            resource = {"type": 4, "message": msg.to_dict()}
        elif ctype == 5:
            flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
            msg = self._interaction_message(handle, {}, [], flags)
            handle.original = msg
            await self._message_event("MESSAGE_CREATE", msg)
        elif ctype == 6:
            handle.original = handle.message
        elif ctype == 7:
            assert handle.message is not None
            handle.original = handle.message
            await self._edit(handle.message, data, uploads, handle.attachment_size_limit)
            resource = {"type": 7, "message": handle.message.to_dict()}
        if handle.original is not None and ctype in (4, 5):
            interaction["response_message_id"] = str(handle.original.id)
            interaction["response_message_loading"] = ctype == 5
            interaction["response_message_ephemeral"] = handle.original.ephemeral
        await self._notify()
        if not _truthy(request.query.get("with_response")):
            return _no_content()
        body: dict[str, Any] = {"interaction": interaction}
        if resource is not None:
            body["resource"] = resource
        return _json_response(body)

    def _webhook_handle(self, request: web.Request) -> InteractionHandle:
        token = request.match_info["token"]
        handle = self._by_token.get(token)
        if request.match_info["application_id"] != str(self.application_id):
            raise DiscordAPIError(404, 10015, "Unknown Webhook")
        if handle is None or handle.is_expired():
            if handle is not None:
                handle.refused.append((f"{request.method} webhook", 50027))
            raise DiscordAPIError(401, 50027, "Invalid Webhook Token")
        if handle.callback is None:
            handle.refused.append((f"{request.method} webhook", 10015))
            raise DiscordAPIError(404, 10015, "Unknown Webhook")
        return handle

    def _webhook_message(self, handle: InteractionHandle, message_id: str) -> Message:
        if message_id == "@original":
            if handle.original is None or handle.original.deleted:
                raise DiscordAPIError(404, 10008, "Unknown Message")
            return handle.original
        candidates = [handle.original, *handle.followups]
        for msg in candidates:
            if msg is not None and str(msg.id) == message_id and not msg.deleted:
                return msg
        raise DiscordAPIError(404, 10008, "Unknown Message")

    async def _execute_webhook(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        payload, uploads = await self._read(request)
        self._check_payload(payload, uploads, creating=True)
        self._check_sizes(uploads, handle.attachment_size_limit)
        original = handle.original
        assert handle.callback is not None
        if (
            handle.callback.type == 5
            and original is not None
            and original.loading
            and not original.deleted
        ):
            # Discord: the first follow-up to a deferred reply replaces its "thinking"
            # message (and keeps the defer's ephemeral state), it is not a new message.
            msg = await self._edit(original, payload, uploads, handle.attachment_size_limit)
            handle.followups.append(msg)
        else:
            flags = int(payload.get("flags") or 0) & _WEBHOOK_SENDABLE_FLAGS
            msg = self._interaction_message(handle, payload, uploads, flags)
            handle.followups.append(msg)
            await self._message_event("MESSAGE_CREATE", msg)
            await self._notify()
        if not _truthy(request.query.get("wait")):
            return _no_content()
        return _json_response(msg.to_dict())

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        return _json_response(
            self._webhook_message(handle, request.match_info["message_id"]).to_dict()
        )

    async def _patch_webhook_message(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        msg = self._webhook_message(handle, request.match_info["message_id"])
        payload, uploads = await self._read(request)
        await self._edit(msg, payload, uploads, handle.attachment_size_limit)
        return _json_response(msg.to_dict())

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        msg = self._webhook_message(handle, request.match_info["message_id"])
        await self._delete(msg)
        return _no_content()

    # -- channels ---------------------------------------------------------------
    def _channel_for(self, request: web.Request, needed: int = Perm.VIEW_CHANNEL) -> Channel:
        self._require_bot(request)
        cid = request.match_info["channel_id"]
        channel = self.guild.channels.get(int(cid)) if cid.isdigit() else None
        if channel is None:
            raise DiscordAPIError(404, 10003, "Unknown Channel")
        perms = self.permissions_for(self.bot_user, channel)
        if not perms & Perm.VIEW_CHANNEL:
            raise DiscordAPIError(403, 50001, "Missing Access")
        if needed & ~perms:
            raise DiscordAPIError(403, 50013, "Missing Permissions")
        return channel

    def _channel_message(self, channel: Channel, message_id: str) -> Message:
        msg = self._messages.get(int(message_id)) if message_id.isdigit() else None
        if msg is None or msg.channel_id != channel.id or msg.deleted or msg.ephemeral:
            raise DiscordAPIError(404, 10008, "Unknown Message")
        return msg

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel_for(request)
        return _json_response(channel.to_dict())

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel_for(request, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        q = request.query
        limit = int(q.get("limit", 50))
        msgs = sorted(
            (m for m in self.messages(channel) if not m.ephemeral), key=lambda m: m.id, reverse=True
        )
        if "before" in q:
            msgs = [m for m in msgs if m.id < int(q["before"])]
        if "after" in q:
            msgs = [m for m in msgs if m.id > int(q["after"])]
        if "around" in q:
            pivot = int(q["around"])
            older = [m for m in msgs if m.id <= pivot][: (limit + 1) // 2]
            newer = [m for m in msgs if m.id > pivot][-(limit // 2) :] if limit > 1 else []
            msgs = newer + older
        return _json_response([m.to_dict() for m in msgs[:limit]])

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = self._channel_for(request, Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES)
        payload, uploads = await self._read(request)
        perms = self.permissions_for(self.bot_user, channel)
        if uploads and not perms & Perm.ATTACH_FILES:
            raise DiscordAPIError(403, 50013, "Missing Permissions")
        self._check_payload(payload, uploads, creating=True)
        self._check_sizes(uploads, self.attachment_size_limit)
        nonce = payload.get("nonce")
        if nonce is not None and payload.get("enforce_nonce"):
            seen = self._nonces.get((channel.id, str(nonce)))
            if seen is not None and self.clock() - seen[0] < self.nonce_window:
                return _json_response(seen[1].to_dict())
        referenced = None
        ref = payload.get("message_reference")
        if ref and ref.get("message_id"):
            referenced = self._messages.get(int(ref["message_id"]))
            if referenced is None and ref.get("fail_if_not_exists", True):
                raise _invalid_form("message_reference to an unknown message")
        flags = int(payload.get("flags") or 0) & _SENDABLE_FLAGS
        msg = self._store_message(
            channel,
            self.bot_user,
            self._version(channel, payload, uploads, flags=flags),
            type=19 if referenced else 0,
            nonce=nonce,
            tts=bool(payload.get("tts", False)),
            referenced=referenced,
        )
        if nonce is not None and payload.get("enforce_nonce"):
            self._nonces[(channel.id, str(nonce))] = (self.clock(), msg)
        await self._message_event("MESSAGE_CREATE", msg)
        await self._notify()
        return _json_response(msg.to_dict())

    async def _get_message(self, request: web.Request) -> web.Response:
        channel = self._channel_for(request, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        return _json_response(
            self._channel_message(channel, request.match_info["message_id"]).to_dict()
        )

    async def _patch_message(self, request: web.Request) -> web.Response:
        channel = self._channel_for(request)
        msg = self._channel_message(channel, request.match_info["message_id"])
        if msg.author.id != self.bot_user.id:
            raise DiscordAPIError(403, 50005, "Cannot edit a message authored by another user")
        payload, uploads = await self._read(request)
        if uploads and not self.permissions_for(self.bot_user, channel) & Perm.ATTACH_FILES:
            raise DiscordAPIError(403, 50013, "Missing Permissions")
        await self._edit(msg, payload, uploads, self.attachment_size_limit)
        return _json_response(msg.to_dict())

    async def _delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel_for(request)
        msg = self._channel_message(channel, request.match_info["message_id"])
        own = msg.author.id == self.bot_user.id
        if not own and not self.permissions_for(self.bot_user, channel) & Perm.MANAGE_MESSAGES:
            raise DiscordAPIError(403, 50013, "Missing Permissions")
        await self._delete(msg)
        return _no_content()

    async def _typing(self, request: web.Request) -> web.Response:
        self._channel_for(request, Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES)
        return _no_content()


def _option_response(option: Mapping[str, Any]) -> dict[str, Any]:
    """An option as Discord echoes it: no nulls, no ``required: false`` noise."""
    out = {k: v for k, v in option.items() if v is not None}
    if "options" in out:
        out["options"] = [_option_response(o) for o in out["options"]]
    return out
