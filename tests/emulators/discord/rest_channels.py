"""REST: channels and their messages, as the bot sends them with its bot token
(``channel.send``, ``message.edit``, history). Permissions are checked as Discord does
(403 / 50013), and ``nonce`` + ``enforce_nonce`` deduplicate creates."""

from __future__ import annotations

from aiohttp import web

from tests.emulators.discord.common import (
    API_PREFIX,
    SENDABLE_FLAGS,
    DiscordAPIError,
    Perm,
    invalid_form,
    json_response,
    no_content,
)
from tests.emulators.discord.message_store import MessageStore
from tests.emulators.discord.messages import Message
from tests.emulators.discord.model import Channel
from tests.emulators.discord.rest_base import RestBase


class ChannelRoutes(RestBase, MessageStore):
    def _add_channel_routes(self, router: web.UrlDispatcher) -> None:
        p = API_PREFIX + "/channels/{channel_id}"
        router.add_get(p, self._get_channel)
        router.add_get(p + "/messages", self._list_messages)
        router.add_post(p + "/messages", self._create_message)
        router.add_get(p + "/messages/{message_id}", self._get_message)
        router.add_patch(p + "/messages/{message_id}", self._patch_message)
        router.add_delete(p + "/messages/{message_id}", self._delete_message)
        router.add_post(p + "/typing", self._typing)

    def _channel_for(self, request: web.Request, needed: int = Perm.VIEW_CHANNEL) -> Channel:
        self._require_bot(request)
        cid = request.match_info["channel_id"]
        channel = self._find_channel(int(cid)) if cid.isdigit() else None
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
        return json_response(channel.to_dict())

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel_for(request, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        q = request.query
        limit = int(q.get("limit", 50))
        msgs = sorted(
            (
                m
                for m in self._messages.values()
                if m.channel_id == channel.id and not m.deleted and not m.ephemeral
            ),
            key=lambda m: m.id,
            reverse=True,
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
        return json_response([m.to_dict() for m in msgs[:limit]])

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
                return json_response(seen[1].to_dict())
        referenced = None
        ref = payload.get("message_reference")
        if ref and ref.get("message_id"):
            referenced = self._messages.get(int(ref["message_id"]))
            if referenced is None and ref.get("fail_if_not_exists", True):
                raise invalid_form("message_reference to an unknown message")
        flags = int(payload.get("flags") or 0) & SENDABLE_FLAGS
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
        await self.gateway.message_event("MESSAGE_CREATE", msg)
        await self._notify()
        return json_response(msg.to_dict())

    async def _get_message(self, request: web.Request) -> web.Response:
        channel = self._channel_for(request, Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY)
        return json_response(
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
        return json_response(msg.to_dict())

    async def _delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel_for(request)
        msg = self._channel_message(channel, request.match_info["message_id"])
        own = msg.author.id == self.bot_user.id
        if not own and not self.permissions_for(self.bot_user, channel) & Perm.MANAGE_MESSAGES:
            raise DiscordAPIError(403, 50013, "Missing Permissions")
        await self._delete(msg)
        return no_content()

    async def _typing(self, request: web.Request) -> web.Response:
        self._channel_for(request, Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES)
        return no_content()
