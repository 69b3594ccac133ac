"""Storing and changing messages, shared by every route that writes one: Discord's
form checks and limits, attachments kept or replaced on edit, the MESSAGE_* events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.emulators.discord.common import (
    EDITABLE_FLAGS,
    FLAG_COMPONENTS_V2,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    DiscordAPIError,
    invalid_form,
    now,
)
from tests.emulators.discord.messages import Message, MessageVersion, walk_components
from tests.emulators.discord.model import Attachment, Channel, User
from tests.emulators.discord.rest_base import Upload
from tests.emulators.discord.world import WorldMixin


class MessageStore(WorldMixin):
    def _check_payload(
        self, payload: Mapping[str, Any], uploads: list[Upload], *, creating: bool
    ) -> None:
        """Discord's form checks that matter for a bot (limits, empty messages)."""
        if not isinstance(payload, Mapping):
            raise invalid_form("message payload must be an object")
        for key, kind in (
            ("content", str),
            ("embeds", list),
            ("components", list),
            ("attachments", list),
            ("allowed_mentions", dict),
            ("flags", int),
        ):
            if payload.get(key) is not None and not isinstance(payload[key], kind):
                raise invalid_form(f"{key} must be a {kind.__name__}")
        content = payload.get("content") or ""
        if len(content) > 2000:
            raise invalid_form(f"content is {len(content)} characters (max 2000)")
        embeds = payload.get("embeds") or []
        if len(embeds) > 10:
            raise invalid_form("more than 10 embeds")
        total = 0
        for embed in embeds:
            for key, limit in (("title", 256), ("description", 4096)):
                text = embed.get(key) or ""
                total += len(text)
                if len(text) > limit:
                    raise invalid_form(f"embed {key} is {len(text)} characters (max {limit})")
            fields = embed.get("fields") or []
            if len(fields) > 25:
                raise invalid_form("more than 25 embed fields")
            for f in fields:
                if len(f.get("name") or "") > 256 or len(f.get("value") or "") > 1024:
                    raise invalid_form("embed field name > 256 or value > 1024")
                total += len(f.get("name") or "") + len(f.get("value") or "")
            footer = (embed.get("footer") or {}).get("text") or ""
            author = (embed.get("author") or {}).get("name") or ""
            if len(footer) > 2048 or len(author) > 256:
                raise invalid_form("embed footer > 2048 or author name > 256")
            total += len(footer) + len(author)
        if total > 6000:
            raise invalid_form(f"embeds hold {total} characters (max 6000)")
        components = payload.get("components") or []
        flags = payload.get("flags") or 0
        if not flags & FLAG_COMPONENTS_V2 and len(components) > 5:
            raise invalid_form("more than 5 action rows")
        seen: set[str] = set()
        for comp in walk_components(components):
            if comp.get("type") == 1 and len(comp.get("components") or []) > 5:
                raise invalid_form("more than 5 components in an action row")
            cid = comp.get("custom_id")
            if cid is not None:
                if len(cid) > 100 or cid in seen:
                    raise invalid_form(f"custom_id {cid!r} too long or duplicated")
                seen.add(cid)
            if len(comp.get("label") or "") > 80:
                raise invalid_form("component label longer than 80")
        am = payload.get("allowed_mentions")
        if am:
            parse = am.get("parse") or []
            if ("users" in parse and am.get("users")) or ("roles" in parse and am.get("roles")):
                raise invalid_form("allowed_mentions parse and users/roles are mutually exclusive")
        if len(uploads) > 10 or len(payload.get("attachments") or []) > 10:
            raise invalid_form("more than 10 attachments")
        if creating and not (
            content
            or embeds
            or uploads
            or components
            or payload.get("sticker_ids")
            or payload.get("poll")
        ):
            raise DiscordAPIError(400, 50006, "Cannot send an empty message")

    def _check_sizes(self, uploads: list[Upload], limit: int) -> None:
        for up in uploads:
            if len(up.data) > limit:
                raise DiscordAPIError(413, 40005, "Request entity too large")

    def _attachments_for(
        self,
        channel: Channel,
        payload: Mapping[str, Any],
        uploads: list[Upload],
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

        def store(up: Upload, item: Mapping[str, Any]) -> Attachment:
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
                    raise invalid_form(f"attachment id {aid} is neither kept nor uploaded")
        else:
            result = list(existing or [])
        for index in sorted(by_index):
            if index not in used:
                result.append(store(by_index[index], {}))
        if len(result) > 10:
            raise invalid_form("more than 10 attachments")
        return result

    def _version(
        self,
        channel: Channel,
        payload: Mapping[str, Any],
        uploads: list[Upload],
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
                at=now(),
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
            at=now(),
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
            guild=self.guild_of(channel),
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
        uploads: list[Upload],
        limit: int,
    ) -> Message:
        self._check_payload(payload, uploads, creating=False)
        self._check_sizes(uploads, limit)
        flags = msg.flags & ~FLAG_LOADING
        if payload.get("flags") is not None:
            flags = (flags & ~EDITABLE_FLAGS) | (int(payload["flags"]) & EDITABLE_FLAGS)
        channel = self._channel(msg.channel_id)
        was_loading = msg.loading
        msg.versions.append(self._version(channel, payload, uploads, flags=flags, base=msg.current))
        if not was_loading:
            msg.edited_at = msg.current.at
        await self.gateway.message_event("MESSAGE_UPDATE", msg)
        await self._notify()
        return msg

    async def _delete(self, msg: Message) -> None:
        msg.deleted = True
        await self.gateway.message_event("MESSAGE_DELETE", msg)
        await self._notify()
