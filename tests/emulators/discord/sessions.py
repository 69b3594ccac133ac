"""Gateway sessions and where events go.

Every IDENTIFY opens a :class:`GatewaySession` for one shard (``[0, 1]`` when the
payload carries no ``shard``). A guild's events, interactions included, go to the
sessions of its shard (``(guild_id >> 22) % shard_count``); a session outlives its
websocket and keeps what is sent meanwhile for a RESUME."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.emulators.discord.common import Intent, shard_of
from tests.emulators.discord.gateway_payloads import guild_create_payload, message_event_payload
from tests.emulators.discord.messages import Message
from tests.emulators.discord.model import Guild

if TYPE_CHECKING:
    from tests.emulators.discord.state import EmulatorState


@dataclass(eq=False)
class GatewaySession:
    """What one IDENTIFY started: a shard, its intents, the events sent to it (for a
    RESUME) and the websocket it is on now (None while disconnected)."""

    id: str
    intents: int
    shard_id: int = 0
    shard_count: int = 1
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    ready: bool = False
    retired: bool = False  # replaced by a new IDENTIFY or invalidated: cannot resume
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def live(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def runs(self, guild_id: int) -> bool:
        return shard_of(guild_id, self.shard_count) == self.shard_id


class Connection:
    """One websocket connection; sends are serialised by a lock."""

    def __init__(self, ws: web.WebSocketResponse, number: int) -> None:
        self.ws = ws
        self.number = number
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


class SessionRouter:
    """The sessions and open connections, and sending events to the right ones."""

    def __init__(self, emu: EmulatorState) -> None:
        self.emu = emu
        self.sessions: list[GatewaySession] = []  # in order of IDENTIFY
        self.connections: set[Connection] = set()
        self._background: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.ws.close(code=1001)

    # ----------------------------------------------------------------- sessions
    def current(self) -> list[GatewaySession]:
        """Sessions that receive events (connected, or queueing until a RESUME)."""
        return [s for s in self.sessions if not s.retired]

    def targets(
        self, *, guild_id: int | None = None, shard_id: int | None = None
    ) -> list[GatewaySession]:
        """The sessions of a guild's shard, or of ``shard_id`` (default: shard 0)."""
        if guild_id is not None:
            return [s for s in self.current() if s.runs(guild_id)]
        wanted = 0 if shard_id is None else shard_id
        return [s for s in self.current() if s.shard_id == wanted]

    @property
    def shard_count(self) -> int:
        """The shard count the bot identified with last (before any: Discord's
        recommendation, ``emu.recommended_shards``)."""
        current = self.current()
        return current[-1].shard_count if current else self.emu.recommended_shards

    def ready_session(self, shard_id: int | None = None) -> GatewaySession | None:
        """With ``shard_id``: that shard's session once connected and past READY +
        GUILD_CREATE (or RESUMED). Without: shard 0's, once every shard of the count the
        bot identified with is ready (a plain ``Client`` runs the one shard [0, 1])."""
        ready = [s for s in self.current() if s.ready and s.live]
        if shard_id is not None:
            return next((s for s in ready if s.shard_id == shard_id), None)
        if not ready:
            return None
        count = ready[-1].shard_count
        by_shard = {s.shard_id: s for s in ready if s.shard_count == count}
        return by_shard[0] if set(by_shard) == set(range(count)) else None

    def connection_of(self, ws: web.WebSocketResponse | None) -> Connection | None:
        return next((c for c in self.connections if ws is not None and c.ws is ws), None)

    def _live_session(self, shard_id: int) -> GatewaySession:
        session = next((s for s in self.targets(shard_id=shard_id) if s.live), None)
        if session is None:
            raise RuntimeError(f"no live gateway connection runs shard {shard_id}")
        return session

    # ------------------------------------------------------------------- sending
    async def send_event(
        self,
        sessions: list[GatewaySession],
        event: str,
        data: Mapping[str, Any],
        intent: int | None = None,
        *,
        on_send: Callable[[], None] | None = None,
    ) -> bool:
        """Dispatch (op 0) to each of ``sessions``; queued in a disconnected one.

        Returns False when no session took the event (each lacks ``intent``).
        ``on_send`` is called just before the event is written to a socket."""
        sent = False
        for session in sessions:
            if intent is not None and not session.intents & intent:
                continue
            async with session.lock:
                session.seq += 1
                payload = {"op": 0, "t": event, "s": session.seq, "d": data}
                session.events.append(payload)
                conn = self.connection_of(session.ws)
                if conn is not None:
                    await conn.send(payload, on_send)
            sent = True
        return sent

    async def dispatch(
        self,
        event: str,
        data: Mapping[str, Any],
        intent: int | None = None,
        *,
        guild_id: int | None = None,
        shard_id: int | None = None,
        on_send: Callable[[], None] | None = None,
    ) -> bool:
        """Send an event to the shard of ``guild_id`` (or to ``shard_id``, default 0)."""
        sessions = self.targets(guild_id=guild_id, shard_id=shard_id)
        if not sessions:
            where = f"guild {guild_id}" if guild_id is not None else f"shard {shard_id or 0}"
            raise RuntimeError(f"no bot has identified on the gateway for {where} yet")
        return await self.send_event(sessions, event, data, intent, on_send=on_send)

    def dispatch_soon(self, event: str, data: Mapping[str, Any], intent: int, guild: Guild) -> None:
        """State builders are synchronous: tell a connected bot in the background."""
        sessions = self.targets(guild_id=guild.id)
        if sessions:
            self._background_task(self.send_event(sessions, event, data, intent))

    def guild_joined(self, guild: Guild) -> None:
        """GUILD_CREATE for a guild added while the bot runs its shard."""
        for session in self.targets(guild_id=guild.id):
            payload = self._guild_create(guild, session)
            self._background_task(self.send_event([session], "GUILD_CREATE", payload))

    def _background_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def message_event(self, event: str, msg: Message) -> None:
        """MESSAGE_CREATE / UPDATE / DELETE to the bot, as Discord would send them."""
        if msg.ephemeral or msg.guild is None:
            return
        for session in self.targets(guild_id=msg.guild.id):
            data = message_event_payload(self.emu, event, msg, msg.guild, session.intents)
            await self.send_event([session], event, data, Intent.GUILD_MESSAGES)

    async def round_trip(self, session: GatewaySession | None) -> None:
        """op 1 "heartbeat now", until the client's op 1 answer (at most 2 s): everything
        sent before on this session's connection has been read by the bot."""
        conn = None if session is None else self.connection_of(session.ws)
        if conn is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.heartbeat_waiters.append(fut)
        if await conn.send({"op": 1, "d": None, "s": None, "t": None}):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await fut

    def _guild_create(self, guild: Guild, session: GatewaySession) -> dict[str, Any]:
        with_members = bool(session.intents & Intent.GUILD_MEMBERS)
        return guild_create_payload(self.emu, guild, with_members=with_members)
