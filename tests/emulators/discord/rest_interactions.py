"""REST: answering interactions.

The first answer is the callback (``POST /interactions/{id}/{token}/callback``): type 4
replies, 5 defers ("thinking"), 6 / 7 acknowledge or edit the message of a component,
8 returns autocomplete choices, 9 opens a modal. Everything after goes through the
interaction's webhook (``/webhooks/{application_id}/{token}``, no bot token needed):
follow-ups (the first one after a defer fills the "thinking" message) and edits or
deletes of ``@original`` and of follow-ups, for as long as the token lives (15 min)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tests.emulators.discord.common import (
    API_PREFIX,
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    WEBHOOK_SENDABLE_FLAGS,
    DiscordAPIError,
    invalid_form,
    json_response,
    no_content,
    truthy,
)
from tests.emulators.discord.interactions import Callback, InteractionHandle
from tests.emulators.discord.message_store import MessageStore
from tests.emulators.discord.messages import Message
from tests.emulators.discord.rest_base import RestBase, Upload

log = logging.getLogger(__name__)


class InteractionRoutes(RestBase, MessageStore):
    def _add_interaction_routes(self, router: web.UrlDispatcher) -> None:
        p = API_PREFIX
        router.add_post(p + "/interactions/{interaction_id}/{token}/callback", self._callback)
        router.add_post(p + "/webhooks/{application_id}/{token}", self._execute_webhook)
        msg_route = p + "/webhooks/{application_id}/{token}/messages/{message_id}"
        router.add_get(msg_route, self._get_webhook_message)
        router.add_patch(msg_route, self._patch_webhook_message)
        router.add_delete(msg_route, self._delete_webhook_message)

    def _interaction_metadata(self, handle: InteractionHandle) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": str(handle.id),
            "type": handle.type,
            "user": handle.user.to_dict(),
            "authorizing_integration_owners": {"0": str(handle.channel.guild_id)},
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
        uploads: list[Upload],
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
            raise invalid_form(
                f"callback type {ctype} not valid for interaction type {handle.type}"
            )
        resource: dict[str, Any] | None = None
        if ctype in (4, 7):
            self._check_payload(data, uploads, creating=ctype == 4)
            self._check_sizes(uploads, handle.attachment_size_limit)
        if ctype == 8:
            choices = data.get("choices") or []
            if len(choices) > 25:
                raise invalid_form("more than 25 autocomplete choices")
        if ctype == 9 and not all(data.get(k) for k in ("custom_id", "title", "components")):
            raise invalid_form("modal needs custom_id, title and components")
        handle.callback = Callback(
            ctype,
            data,
            latency,
            [(u.filename, u.data) for u in sorted(uploads, key=lambda u: u.index)],
        )
        interaction: dict[str, Any] = {"id": str(handle.id), "type": handle.type}
        if ctype == 4:
            flags = int(data.get("flags") or 0) & WEBHOOK_SENDABLE_FLAGS
            msg = self._interaction_message(handle, data, uploads, flags)
            handle.original = msg
            await self.gateway.message_event("MESSAGE_CREATE", msg)
            resource = {"type": 4, "message": msg.to_dict()}
        elif ctype == 5:
            flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
            msg = self._interaction_message(handle, {}, [], flags)
            handle.original = msg
            await self.gateway.message_event("MESSAGE_CREATE", msg)
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
        if not truthy(request.query.get("with_response")):
            return no_content()
        body: dict[str, Any] = {"interaction": interaction}
        if resource is not None:
            body["resource"] = resource
        return json_response(body)

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
            flags = int(payload.get("flags") or 0) & WEBHOOK_SENDABLE_FLAGS
            msg = self._interaction_message(handle, payload, uploads, flags)
            handle.followups.append(msg)
            await self.gateway.message_event("MESSAGE_CREATE", msg)
            await self._notify()
        if not truthy(request.query.get("wait")):
            return no_content()
        return json_response(msg.to_dict())

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        return json_response(
            self._webhook_message(handle, request.match_info["message_id"]).to_dict()
        )

    async def _patch_webhook_message(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        msg = self._webhook_message(handle, request.match_info["message_id"])
        payload, uploads = await self._read(request)
        await self._edit(msg, payload, uploads, handle.attachment_size_limit)
        return json_response(msg.to_dict())

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        msg = self._webhook_message(handle, request.match_info["message_id"])
        await self._delete(msg)
        return no_content()
