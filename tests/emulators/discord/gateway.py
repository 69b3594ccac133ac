"""The gateway: websocket connections, HELLO / IDENTIFY / RESUME / heartbeats, and
dispatching events to the bot.

A :class:`GatewaySession` outlives its websocket: events sent while the bot is away are
kept and replayed when it RESUMEs on a new connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tests.emulators.discord.common import Intent, skip_spec
from tests.emulators.discord.gateway_payloads import (
    guild_create_payload,
    message_event_payload,
    ready_payload,
)
from tests.emulators.discord.messages import Message

if TYPE_CHECKING:
    from tests.emulators.discord.state import EmulatorState

log = logging.getLogger(__name__)


@dataclass
class GatewaySession:
    id: str
    intents: int
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    ready: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Connection:
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


class Gateway:
    """The gateway side of the emulator (``GET /gateway`` upgrades to a websocket)."""

    def __init__(self, emu: EmulatorState) -> None:
        self.emu = emu
        self.session: GatewaySession | None = None
        self.connections: set[Connection] = set()
        self.received: list[dict[str, Any]] = []  # every payload the bot sent
        self.identify_count = 0
        self.resume_count = 0
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.ws.close(code=1001)

    def ready_session(self) -> GatewaySession | None:
        """The session, once a client is connected and has had READY + GUILD_CREATE."""
        s = self.session
        return s if s is not None and s.ready and s.ws is not None and not s.ws.closed else None

    def connection_of(self, ws: web.WebSocketResponse | None) -> Connection | None:
        return next((c for c in self.connections if ws is not None and c.ws is ws), None)

    # ------------------------------------------------------------------- sending
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
        session = self.session
        if session is None:
            raise RuntimeError("no bot has identified on the gateway yet")
        if intent is not None and not session.intents & intent:
            return False
        async with session.lock:
            session.seq += 1
            payload = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.events.append(payload)
            conn = self.connection_of(session.ws)
            if conn is not None:
                await conn.send(payload, on_send)
        return True

    def dispatch_soon(self, event: str, data: Mapping[str, Any], intent: int) -> None:
        """State builders are synchronous: tell a connected bot in the background."""
        if self.session is None:
            return
        task = asyncio.get_running_loop().create_task(self.dispatch(event, data, intent))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def message_event(self, event: str, msg: Message) -> None:
        """MESSAGE_CREATE / UPDATE / DELETE to the bot, as Discord would send them."""
        if self.session is None or msg.ephemeral:
            return
        data = message_event_payload(self.emu, event, msg, self.emu.guild, self.session.intents)
        await self.dispatch(event, data, Intent.GUILD_MESSAGES)

    async def round_trip(self) -> None:
        """op 1 "heartbeat now", until the client's op 1 answer (at most 2 s): everything
        sent before has been read by the bot."""
        session = self.session
        conn = None if session is None else self.connection_of(session.ws)
        if conn is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.heartbeat_waiters.append(fut)
        if await conn.send({"op": 1, "d": None, "s": None, "t": None}):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await fut

    # -------------------------------------------------------------- test controls
    async def drop(self, code: int = 4000, *, invalidate: bool = False) -> None:
        session = self.session
        if session is None or session.ws is None:
            raise RuntimeError("no gateway connection to drop")
        async with session.lock:
            ws, session.ws = session.ws, None
            if invalidate:
                self.session = None
        await ws.close(code=code)
        await self.emu._notify()

    async def send_reconnect(self) -> None:
        session = self.session
        conn = None if session is None else self.connection_of(session.ws)
        if conn is None:
            raise RuntimeError("no gateway connection")
        await conn.send({"op": 7, "d": None, "s": None, "t": None})

    # ---------------------------------------------------------------- the socket
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /gateway``: one websocket connection, from HELLO to close."""
        skip_spec(request)
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(ws)
        self.connections.add(conn)
        log.debug("gateway: connection %x opened", id(ws))
        hello = {"heartbeat_interval": self.emu.heartbeat_interval_ms}
        await conn.send({"op": 10, "d": hello, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_message(conn, json.loads(msg.data))
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            log.debug("gateway: connection %x closed (code %s)", id(ws), ws.close_code)
            self.connections.discard(conn)
            session = conn.session
            if session is not None and session.ws is ws:
                async with session.lock:
                    if session.ws is ws:
                        session.ws = None
            await self.emu._notify()
        return ws

    async def _on_message(self, conn: Connection, msg: dict[str, Any]) -> None:
        op, data = msg.get("op"), msg.get("d")
        self.received.append(msg)
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
            await self._member_chunk(data or {})
        elif op in (3, 4):
            pass  # presence / voice state updates: accepted, ignored
        else:
            log.warning("gateway: unexpected op %s", op)

    async def _identify(self, conn: Connection, data: Mapping[str, Any]) -> None:
        emu = self.emu
        if data.get("token") != emu.bot_token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & Intent.PRIVILEGED & ~emu.allowed_privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        old = self.session
        if old is not None and old.ws is not None and old.ws is not conn.ws:
            with contextlib.suppress(Exception):
                await old.ws.close(code=4000)
        session = GatewaySession(id=secrets.token_hex(16), intents=intents)
        async with session.lock:
            self.session = session
            conn.session = session
            self.identify_count += 1
            ready = ready_payload(emu, session.id, [emu.guild], data.get("shard"))
            guild_create = guild_create_payload(
                emu,
                emu.guild,
                emu.channel.id,
                with_members=bool(intents & Intent.GUILD_MEMBERS),
            )
            for event, payload in (("READY", ready), ("GUILD_CREATE", guild_create)):
                session.seq += 1
                frame = {"op": 0, "t": event, "s": session.seq, "d": payload}
                session.events.append(frame)
                await conn.send(frame)
            session.ws = conn.ws
            session.ready = True
        await emu._notify()

    async def _resume(self, conn: Connection, data: Mapping[str, Any]) -> None:
        session = self.session
        if (
            session is None
            or data.get("session_id") != session.id
            or data.get("token") != self.emu.bot_token
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
        await self.emu._notify()

    async def _member_chunk(self, data: Mapping[str, Any]) -> None:
        if self.session is None:
            return
        guild = self.emu.guild
        members = list(guild.members.values())
        user_ids = data.get("user_ids")
        if user_ids:
            wanted = {int(u) for u in ([user_ids] if isinstance(user_ids, str | int) else user_ids)}
            members = [m for m in members if m.user.id in wanted]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [m.to_dict() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)
