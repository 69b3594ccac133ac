"""The test driver: what users do. ``slash``, ``message_command`` (a message's Apps
menu), ``autocomplete``, ``press`` / ``select``, ``submit_modal`` send an
INTERACTION_CREATE and return its :class:`InteractionHandle`; ``user_message`` posts as a
user, with attachments if given."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tests.emulators.discord.common import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    now,
)
from tests.emulators.discord.interactions import InteractionHandle
from tests.emulators.discord.message_store import MessageStore
from tests.emulators.discord.messages import Message, MessageVersion
from tests.emulators.discord.model import Attachment, Channel, Guild, User
from tests.emulators.discord.options import OptionsMixin
from tests.emulators.discord.sessions import GatewaySession


class DriverMixin(OptionsMixin, MessageStore):
    def _interaction_payload(self, handle: InteractionHandle, locale: str) -> dict[str, Any]:
        channel = handle.channel
        guild = self.guild_of(channel)
        member = guild.members.get(handle.user.id)
        if member is None:
            raise LookupError(f"{handle.user!r} is not a member of {guild!r} (emu.add_member)")
        payload: dict[str, Any] = {
            "id": str(handle.id),
            "application_id": str(self.application_id),
            "type": handle.type,
            "token": handle.token,
            "version": 1,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "channel_id": str(channel.id),
            "channel": channel.to_dict(permissions=self.permissions_for(handle.user, channel)),
            "member": member.to_dict(permissions=self.permissions_for(handle.user, channel)),
            "app_permissions": str(self.permissions_for(self.bot_user, channel)),
            "locale": locale,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
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
        """INTERACTION_CREATE to the session(s) of the shard that runs the channel's
        guild (recorded on the handle: ``shard_id``, ``session_ids``)."""
        guild = self.guild_of(handle.channel)
        if settle:
            sessions = self._sessions_for(guild)
            await self._settle(sessions[0])
        handle.payload = self._interaction_payload(handle, locale)
        sessions = self._sessions_for(guild)
        handle.shard_id = sessions[0].shard_id
        handle.session_ids = [s.id for s in sessions]
        self.interactions.append(handle)
        self._by_id[handle.id] = handle
        self._by_token[handle.token] = handle
        handle.sent = time.monotonic()

        def written() -> None:
            handle.sent = time.monotonic()

        await self.gateway.send_event(
            sessions, "INTERACTION_CREATE", handle.payload, on_send=written
        )
        return handle

    def _sessions_for(self, guild: Guild) -> list[GatewaySession]:
        sessions = self.gateway.targets(guild_id=guild.id)
        if not sessions:
            raise RuntimeError(
                f"no bot has identified on the gateway for the shard of {guild!r} yet "
                "(await emu.wait_ready())"
            )
        return sessions

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
        chan = self._channel(channel)
        user = self._user(user, self.guild_of(chan))
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

    async def message_command(
        self, name: str, message: Message | int, *, user: User | None = None
    ) -> InteractionHandle:
        """Run the message context-menu command ``name`` (Apps ▸ name) on ``message``, as
        ``user``: Discord sends the message itself in ``data.resolved.messages``."""
        msg = message if isinstance(message, Message) else self._messages[int(message)]
        if msg.deleted:
            raise LookupError(f"message {msg.id} was deleted")
        chan = self._channel(msg.channel_id)
        user = self._user(user, self.guild_of(chan))
        cmd = self.find_command(name, chan.guild_id, type=3)
        self._check_can_use(cmd, user, chan)
        data: dict[str, Any] = {
            "id": cmd["id"],
            "name": name,
            "type": 3,
            "target_id": str(msg.id),
            "resolved": {"messages": {str(msg.id): msg.to_dict()}},
        }
        if "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        handle = InteractionHandle(
            self,
            type=APPLICATION_COMMAND,
            data=data,
            user=user,
            channel=chan,
            attachment_size_limit=self.attachment_size_limit,
            name=f"menu {name}",
        )
        return await self._send_interaction(handle)

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
        chan = self._channel(channel)
        user = self._user(user, self.guild_of(chan))
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
        msg = message if isinstance(message, Message) else self._messages[int(message)]
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
            user=self._user(user, self.guild_of(msg.channel_id)),
            channel=self._channel(msg.channel_id),
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
        self,
        content: str,
        *,
        user: User | None = None,
        channel: Channel | int | None = None,
        attachments: Sequence[tuple[str, bytes] | Attachment] = (),
    ) -> Message:
        """A message a user posts in a channel (dispatched as MESSAGE_CREATE), with
        ``attachments`` given as ``(filename, bytes)`` or made with ``create_attachment``."""
        chan = self._channel(channel)
        author = self._user(user, self.guild_of(chan))
        records = [
            a if isinstance(a, Attachment) else self.create_attachment(a[0], a[1], channel=chan)
            for a in attachments
        ]
        msg = self._store_message(
            chan,
            author,
            MessageVersion(content, [], [], records, 0, None, now()),
        )
        await self.gateway.message_event("MESSAGE_CREATE", msg)
        await self._notify()
        return msg

    async def _settle(self, session: GatewaySession) -> None:
        """Let the bot digest the answers it already got before a user acts again.

        In a test the "user" reacts within microseconds, where a person needs to see
        the message first: a click could reach the bot before the bot has handled the
        answer that registered the clicked view (with the bot in the same event loop,
        a matter of a few loop turns). So wait for the bot's REST calls in flight, then
        for a gateway round trip (op 1 "heartbeat now", answered by the client's op 1)."""
        with contextlib.suppress(TimeoutError):
            await self._wait(lambda: True if self._inflight == 0 else None, 5.0, "REST calls")
        await self.gateway.round_trip(session)
