"""The test API besides users' actions: what a test reads and waits for (messages,
requests, synced commands), the faults it scripts (``fail_next``, ``expire``) and its
hold on the gateway (``wait_ready``, ``drop_gateway``, ``send_reconnect``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from tests.emulators.discord.common import shard_of
from tests.emulators.discord.interactions import InteractionHandle
from tests.emulators.discord.messages import Message
from tests.emulators.discord.model import Channel, Guild
from tests.emulators.discord.server import FaultRule
from tests.emulators.discord.sessions import GatewaySession
from tests.emulators.discord.shards import GatewayViolation, IdentifyRecord
from tests.emulators.discord.world import WorldMixin


class ControlsMixin(WorldMixin):
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

    def expire(self, handle: InteractionHandle) -> None:
        """From now on the interaction's token is invalid (as after 15 minutes)."""
        handle.expired = True

    # ------------------------------------------------------------------- gateway
    @property
    def identify_count(self) -> int:
        return self.gateway.identify_count

    @property
    def resume_count(self) -> int:
        return self.gateway.resume_count

    @property
    def gateway_received(self) -> list[dict[str, Any]]:
        """Every payload the bot sent on the gateway."""
        return self.gateway.received

    @property
    def identifies(self) -> list[IdentifyRecord]:
        """Every IDENTIFY accepted: when (``emu.clock()``), which shard, which session."""
        return self.gateway.rules.identifies

    @property
    def gateway_violations(self) -> list[GatewayViolation]:
        """Sharding rules the bot broke (the ``discord_emu`` fixture fails the test on
        them; a test that breaks one on purpose clears the list)."""
        return self.gateway.rules.violations

    def shard_of(self, guild: Guild | int, shard_count: int | None = None) -> int:
        """The shard that runs ``guild``, for ``shard_count`` shards (default: the count
        the bot identified with, else ``recommended_shards``)."""
        gid = guild.id if isinstance(guild, Guild) else int(guild)
        return shard_of(gid, shard_count or self.gateway.shard_count)

    async def wait_ready(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109 (the test API takes timeouts)
        *,
        shard_id: int | None = None,
    ) -> GatewaySession:
        """Until the bot is connected and has had READY + GUILD_CREATE (or RESUMED) on
        every shard of the count it identified with, or on ``shard_id`` only (a process
        that runs some of the shards)."""
        what = "a bot ready on the gateway" + ("" if shard_id is None else f" (shard {shard_id})")
        return await self._wait(lambda: self.gateway.ready_session(shard_id), timeout, what)

    async def drop_gateway(
        self, code: int = 4000, *, invalidate: bool = False, shard_id: int = 0
    ) -> None:
        """Close the bot's websocket (of ``shard_id``); discord.py reconnects and RESUMEs
        (or, with ``invalidate``, is told the session is gone and IDENTIFYs again:
        discord.py's ``Client.before_identify_hook`` sleeps 5 s first unless the bot
        overrides it). Events sent meanwhile are queued and replayed on resume; after
        ``invalidate`` the shard has no session until the new IDENTIFY."""
        await self.gateway.drop(code, invalidate=invalidate, shard_id=shard_id)

    async def send_reconnect(self, shard_id: int = 0) -> None:
        """op 7 RECONNECT: the client closes and resumes."""
        await self.gateway.send_reconnect(shard_id)

    async def dispatch(
        self,
        event: str,
        data: Mapping[str, Any],
        intent: int | None = None,
        *,
        guild: Guild | None = None,
        shard_id: int | None = None,
        on_send: Callable[[], None] | None = None,
    ) -> bool:
        """Send any gateway event (op 0) to the shard of ``guild`` (or ``shard_id``,
        default 0); False when the session lacks ``intent``."""
        guild_id = None if guild is None else guild.id
        return await self.gateway.dispatch(
            event, data, intent, guild_id=guild_id, shard_id=shard_id, on_send=on_send
        )
