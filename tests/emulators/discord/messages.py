"""Messages as the emulator stores them: every version (create, then each edit), the
interactive components they carry, and who Discord would ping."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.emulators.discord.common import FLAG_EPHEMERAL, FLAG_LOADING, Perm, iso
from tests.emulators.discord.model import Attachment, Guild, User


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


_INTERACTIVE_TYPES = {2, 3, 5, 6, 7, 8}


def walk_components(components: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for comp in components:
        yield comp
        yield from walk_components(comp.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), Mapping):
                yield from walk_components([comp[key]])


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
        for c in walk_components(components)
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
            "embeds": [embed_response(e) for e in v.embeds],
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edited_at),
            "flags": v.flags,
            "components": components_response(v.raw_components),
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


def embed_response(embed: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in embed.items() if v is not None}
    out.setdefault("type", "rich")
    if "fields" in out:
        out["fields"] = [
            {"name": f["name"], "value": f["value"], "inline": bool(f.get("inline", False))}
            for f in out["fields"]
        ]
    return out


def drop_none(value: Any) -> Any:
    """Discord omits absent fields in what it returns (an emoji's ``id: null``, say)."""
    if isinstance(value, Mapping):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def components_response(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Discord numbers every component (``id``) in tree order when the sender did not."""
    counter = itertools.count(1)

    def convert(comp: Mapping[str, Any]) -> dict[str, Any]:
        out = drop_none(comp)
        if "id" not in out:
            out["id"] = next(counter)
        if "components" in out:
            out["components"] = [convert(c) for c in out["components"]]
        for key in ("component", "accessory"):
            if isinstance(out.get(key), Mapping):
                out[key] = convert(out[key])
        return out

    return [convert(c) for c in components]
