"""The gateway: websocket connections, HELLO / IDENTIFY / RESUME / heartbeats, and
the test's hold on them (drop a connection, ask for a reconnect).

Each connection runs one shard; the shards may come from one process or from several:
nothing here assumes one client. Which session gets which event: ``sessions.py``;
the sharding rules checked at IDENTIFY: ``shards.py``."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tests.emulators.discord.common import Intent, skip_spec
from tests.emulators.discord.gateway_payloads import ready_payload
from tests.emulators.discord.sessions import Connection, GatewaySession, SessionRouter
from tests.emulators.discord.shards import IdentifyRecord, ShardRules, parse_shard

if TYPE_CHECKING:
    from tests.emulators.discord.state import EmulatorState

log = logging.getLogger(__name__)


class Gateway(SessionRouter):
    """The gateway side of the emulator (``GET /gateway`` upgrades to a websocket)."""

    def __init__(self, emu: EmulatorState) -> None:
        super().__init__(emu)
        self.received: list[dict[str, Any]] = []  # every payload the bot sent
        self.rules = ShardRules()
        self.identify_count = 0
        self.resume_count = 0
        self._numbers = itertools.count(1)

    # -------------------------------------------------------------- test controls
    async def drop(self, code: int = 4000, *, invalidate: bool = False, shard_id: int = 0) -> None:
        session = self._live_session(shard_id)
        async with session.lock:
            ws, session.ws = session.ws, None
            if invalidate:
                session.retired = True
        assert ws is not None
        await ws.close(code=code)
        await self.emu._notify()

    async def send_reconnect(self, shard_id: int = 0) -> None:
        conn = self.connection_of(self._live_session(shard_id).ws)
        if conn is None:
            raise RuntimeError(f"no gateway connection for shard {shard_id}")
        await conn.send({"op": 7, "d": None, "s": None, "t": None})

    # ---------------------------------------------------------------- the socket
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /gateway``: one websocket connection, from HELLO to close."""
        skip_spec(request)
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(ws, next(self._numbers))
        self.connections.add(conn)
        log.debug("gateway: connection %d opened", conn.number)
        hello = {"heartbeat_interval": self.emu.heartbeat_interval_ms}
        await conn.send({"op": 10, "d": hello, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_message(conn, json.loads(msg.data))
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            log.debug("gateway: connection %d closed (code %s)", conn.number, ws.close_code)
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
        log.debug("gateway: connection %d sent op %s", conn.number, op)
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

    async def _identify(self, conn: Connection, data: Mapping[str, Any]) -> None:
        emu = self.emu
        if data.get("token") != emu.bot_token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & Intent.PRIVILEGED & ~emu.allowed_privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = parse_shard(data["shard"]) if "shard" in data else (0, 1)
        if shard is None:
            message = f"IDENTIFY with shard {data['shard']!r}"
            self.rules.violation("invalid-shard", message, emu.clock())
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        session = GatewaySession(secrets.token_hex(16), intents, *shard)
        others = [s for s in self.current() if s.live and s.ws is not conn.ws]
        record = IdentifyRecord(emu.clock(), *shard, session.id, conn.number, "shard" in data)
        live_shards = [(s.shard_id, s.shard_count) for s in others]
        limit, interval = emu.session_start_limit, emu.identify_interval
        self.rules.check_identify(record, live_shards, limit, interval)
        for old in self.current():
            # A disconnected session of this shard (or of an older shard count) will not
            # be resumed. A live one stays: a duplicate shard, both get the events.
            if old not in others and (old.shard_id == shard[0] or old.shard_count != shard[1]):
                old.retired = True
        guilds = [g for g in emu.guilds.values() if session.runs(g.id)]
        async with session.lock:
            self.sessions.append(session)
            conn.session = session
            self.identify_count += 1
            events = [("READY", ready_payload(emu, session.id, guilds, data.get("shard")))]
            events += [("GUILD_CREATE", self._guild_create(g, session)) for g in guilds]
            for event, payload in events:
                session.seq += 1
                frame = {"op": 0, "t": event, "s": session.seq, "d": payload}
                session.events.append(frame)
                await conn.send(frame)
            session.ws = conn.ws
            session.ready = True
        await emu._notify()

    async def _resume(self, conn: Connection, data: Mapping[str, Any]) -> None:
        session = next((s for s in self.current() if s.id == data.get("session_id")), None)
        if session is None or data.get("token") != self.emu.bot_token:
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

    async def _member_chunk(self, conn: Connection, data: Mapping[str, Any]) -> None:
        """op 8 REQUEST_GUILD_MEMBERS: one GUILD_MEMBERS_CHUNK to the asking session."""
        session = conn.session
        if session is None:
            return
        gid = str(data.get("guild_id", ""))
        guild = self.emu.guilds.get(int(gid)) if gid.isdigit() else self.emu.guild
        if guild is None:
            return
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
        await self.send_event([session], "GUILD_MEMBERS_CHUNK", chunk)
