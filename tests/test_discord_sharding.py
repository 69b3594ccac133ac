"""Several guilds and shards in the Discord emulator: raw websockets (what any process
may send) and a real ``discord.AutoShardedClient``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord.ext import commands

from tests.emulators.discord import DiscordEmulator

INTENTS = discord.Intents.default().value


class RawShard:
    """One gateway connection written with aiohttp alone. It answers the server's
    heartbeat requests and keeps every other payload it receives, in order."""

    def __init__(self, http: aiohttp.ClientSession, emu: DiscordEmulator) -> None:
        self.http = http
        self.emu = emu
        self.seq: int | None = None
        self.ready: dict[str, Any] = {}  # READY's ``d``
        self.received: list[dict[str, Any]] = []
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._acks_to_skip = 0

    @property
    def session_id(self) -> str | None:
        return self.ready.get("session_id")

    async def connect(self) -> None:
        self._ws = await self.http.ws_connect(f"{self.emu.gateway_url}?v=10&encoding=json")
        hello = await self._ws.receive_json()
        assert hello["op"] == 10
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            payload = json.loads(msg.data)
            if payload["op"] == 1:  # "heartbeat now" (the emulator's round trip)
                self._acks_to_skip += 1
                await self._ws.send_json({"op": 1, "d": self.seq})
                continue
            if payload["op"] == 11 and self._acks_to_skip:
                self._acks_to_skip -= 1  # the ack of that answer
                continue
            if payload.get("s") is not None:
                self.seq = payload["s"]
            self.received.append(payload)
            self._queue.put_nowait(payload)

    async def send(self, payload: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_json(payload)

    async def identify(self, shard: tuple[int, int] | None) -> None:
        data: dict[str, Any] = {
            "token": self.emu.bot_token,
            "intents": INTENTS,
            "properties": {"os": "linux", "browser": "raw", "device": "raw"},
        }
        if shard is not None:
            data["shard"] = list(shard)
        await self.send({"op": 2, "d": data})
        ready = await self.next_event()
        assert ready["t"] == "READY"
        self.ready = ready["d"]

    async def resume(self, session_id: str, seq: int) -> None:
        data = {"token": self.emu.bot_token, "session_id": session_id, "seq": seq}
        await self.send({"op": 6, "d": data})

    async def next_event(
        self,
        name: str | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The next payload received (with ``name``: the next dispatch of that name)."""
        async with asyncio.timeout(timeout):
            while True:
                payload = await self._queue.get()
                if name is None or payload.get("t") == name:
                    return payload

    async def events_until_heartbeat_ack(self) -> list[str]:
        """The names of the events read before the answer to an op 1 sent now: the
        socket is ordered, so nothing the emulator sent before is still on its way."""
        names: list[str] = []
        await self.send({"op": 1, "d": self.seq})
        while (payload := await self.next_event()).get("op") != 11:
            names.append(payload["t"])
        return names

    async def closed(self) -> int | None:
        """Once the server has closed the connection: its close code."""
        assert self._ws is not None and self._reader is not None
        async with asyncio.timeout(5):
            await self._reader
        return self._ws.close_code

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader


class RawGateway:
    """Opens raw shards on the emulator, and closes them all at the end of the test."""

    def __init__(self, http: aiohttp.ClientSession, emu: DiscordEmulator) -> None:
        self.http = http
        self.emu = emu
        self.opened: list[RawShard] = []

    async def connect(self) -> RawShard:
        raw = RawShard(self.http, self.emu)
        await raw.connect()
        self.opened.append(raw)
        return raw

    async def identify(self, *shards: tuple[int, int] | None) -> list[RawShard]:
        """One connection per shard (None: no ``shard`` in the IDENTIFY), in order."""
        out = []
        for shard in shards:
            raw = await self.connect()
            await raw.identify(shard)
            out.append(raw)
        return out

    async def close(self) -> None:
        for raw in self.opened:
            await raw.close()


@pytest.fixture
async def gateway(discord_emu: DiscordEmulator) -> AsyncIterator[RawGateway]:
    async with aiohttp.ClientSession() as http:
        raw = RawGateway(http, discord_emu)
        try:
            yield raw
        finally:
            await raw.close()


async def _sync_where(gateway: RawGateway) -> None:
    emu = gateway.emu
    url = f"{emu.api_base}/applications/{emu.application_id}/commands"
    body = [{"name": "where", "description": "Which shard runs this guild", "type": 1}]
    headers = {"Authorization": f"Bot {emu.bot_token}"}
    async with gateway.http.put(url, json=body, headers=headers) as resp:
        assert resp.status == 200


def _ids_on(emu: DiscordEmulator, shard_id: int, shard_count: int) -> set[str]:
    return {str(g.id) for g in emu.guilds.values() if emu.shard_of(g, shard_count) == shard_id}


# ------------------------------------------------------------------ raw websockets


async def test_guilds_on_shards(discord_emu: DiscordEmulator) -> None:
    emu = discord_emu
    ones = [emu.add_guild_on_shard(1, 2) for _ in range(3)]
    assert all((g.id >> 22) % 2 == 1 for g in ones)
    assert {emu.shard_of(g, 2) for g in ones} == {1}
    zero = emu.add_guild_on_shard(0, 3, name="zero")
    assert emu.shard_of(zero, 3) == 0 and zero.name == "zero"
    assert len({g.id for g in emu.guilds.values()}) == len(emu.guilds) == 5
    assert emu.shard_of(emu.guild) == 0  # before any IDENTIFY: recommended_shards (1)
    other = emu.add_guild("other")
    room = emu.add_channel("room", guild=other)
    assert emu.guild_of(room) is other and emu.guild_of(other.system_channel) is other
    erin = emu.add_user("erin", guild=other)
    assert erin.id in other.members and erin.id not in emu.guild.members
    emu.add_member(erin, emu.guild)
    assert erin.id in emu.guild.members


async def test_gateway_bot_answers_shards_and_session_start_limit(gateway: RawGateway) -> None:
    emu = gateway.emu
    emu.recommended_shards = 4
    emu.session_start_limit.max_concurrency = 2
    url, headers = f"{emu.api_base}/gateway/bot", {"Authorization": f"Bot {emu.bot_token}"}
    async with gateway.http.get(url, headers=headers) as resp:
        before = await resp.json()
    assert before["url"] == emu.gateway_url and before["shards"] == 4
    assert before["session_start_limit"]["max_concurrency"] == 2
    await gateway.identify((0, 2))
    async with gateway.http.get(url, headers=headers) as resp:
        after = (await resp.json())["session_start_limit"]
    assert after["remaining"] == before["session_start_limit"]["remaining"] - 1
    assert after["total"] == 1000


async def test_each_shard_gets_its_guilds_and_interactions(gateway: RawGateway) -> None:
    emu = gateway.emu
    emu.session_start_limit.max_concurrency = 2
    on_one = emu.add_guild_on_shard(1, 2)
    emu.add_guild_on_shard(0, 2)
    await _sync_where(gateway)
    zero, one = await gateway.identify((0, 2), (1, 2))

    for raw, shard in ((zero, 0), (one, 1)):
        assert raw.ready["shard"] == [0 + shard, 2]
        assert {g["id"] for g in raw.ready["guilds"]} == _ids_on(emu, shard, 2)
        assert all(g["unavailable"] for g in raw.ready["guilds"])
        created = {p["d"]["id"] for p in raw.received if p["t"] == "GUILD_CREATE"}
        assert created == _ids_on(emu, shard, 2)
    assert [(r.shard, r.sharded) for r in emu.identifies] == [((0, 2), True), ((1, 2), True)]
    await emu.wait_ready()  # both shards of 2

    handle = await emu.slash("where", channel=on_one.system_channel)
    event = await one.next_event("INTERACTION_CREATE")
    assert event["d"]["id"] == str(handle.id) and event["d"]["guild_id"] == str(on_one.id)
    assert handle.shard_id == 1 and handle.session_ids == [one.session_id]
    assert "INTERACTION_CREATE" not in await zero.events_until_heartbeat_ack()

    # the answer may come from any process: REST needs no gateway connection
    url = f"{emu.api_base}/interactions/{handle.id}/{handle.token}/callback?with_response=1"
    body = {"type": 4, "data": {"content": "on shard 1"}}
    async with gateway.http.post(url, json=body) as resp:
        assert resp.status == 200
    original = await handle.wait_original()
    assert emu.guild_of(original.channel_id) is on_one
    assert "MESSAGE_CREATE" in await one.events_until_heartbeat_ack()
    assert "MESSAGE_CREATE" not in await zero.events_until_heartbeat_ack()


async def test_resume_per_shard(gateway: RawGateway) -> None:
    emu = gateway.emu
    emu.session_start_limit.max_concurrency = 2
    on_one = emu.add_guild_on_shard(1, 2)
    await _sync_where(gateway)
    _, one = await gateway.identify((0, 2), (1, 2))
    session_id, seq = one.session_id, one.seq
    assert session_id is not None and seq is not None
    await one.close()
    await emu.wait_until(lambda: emu.gateway.ready_session(1) is None)
    handle = await emu.slash("where", channel=on_one.system_channel)  # queued for shard 1

    again = await gateway.connect()
    await again.resume(session_id, seq)
    replayed = await again.next_event()
    assert replayed["t"] == "INTERACTION_CREATE" and replayed["d"]["id"] == str(handle.id)
    assert (await again.next_event())["t"] == "RESUMED"
    assert (emu.resume_count, emu.identify_count) == (1, 2)
    assert handle.session_ids == [session_id]
    await emu.wait_ready()


async def test_duplicate_shard_is_flagged(gateway: RawGateway) -> None:
    emu = gateway.emu
    emu.identify_interval = 0.0
    on_zero = emu.add_guild_on_shard(0, 2)
    first, second = await gateway.identify((0, 2), (0, 2))
    assert [v.kind for v in emu.gateway_violations] == ["duplicate-shard"]
    emu.gateway_violations.clear()
    # both live connections get the shard's events, as on Discord
    await _sync_where(gateway)
    handle = await emu.slash("where", channel=on_zero.system_channel)
    assert handle.session_ids == [first.session_id, second.session_id]
    for raw in (first, second):
        assert (await raw.next_event("INTERACTION_CREATE"))["d"]["id"] == str(handle.id)
    # not a duplicate: the connections are gone when the shard identifies again
    for raw in (first, second):
        await raw.close()
    await emu.wait_until(lambda: not emu.gateway.connections)
    await gateway.identify((0, 2))
    assert emu.gateway_violations == []


async def test_identify_inside_the_bucket_interval_is_flagged(gateway: RawGateway) -> None:
    emu = gateway.emu
    await gateway.identify((0, 2), (1, 2))  # max_concurrency 1: a single bucket
    [violation] = emu.gateway_violations
    assert violation.kind == "identify-too-soon" and "bucket 0" in violation.message
    emu.gateway_violations.clear()

    emu.advance_clock(5.0)  # the bucket's interval has passed
    await gateway.identify((0, 4))
    assert [v.kind for v in emu.gateway_violations] == ["shard-count-mismatch"] * 2
    emu.gateway_violations.clear()


async def test_max_concurrency_two_lets_two_shards_identify_together(
    gateway: RawGateway,
) -> None:
    emu = gateway.emu
    emu.session_start_limit.max_concurrency = 2
    await gateway.identify((0, 4), (1, 4))  # buckets 0 and 1
    assert emu.gateway_violations == []
    await gateway.identify((2, 4))  # bucket 0 again, at once
    assert [v.kind for v in emu.gateway_violations] == ["identify-too-soon"]
    emu.gateway_violations.clear()


async def test_invalid_shard_is_closed_and_flagged(gateway: RawGateway) -> None:
    emu = gateway.emu
    raw = await gateway.connect()
    await raw.send({"op": 2, "d": {"token": emu.bot_token, "intents": 1, "shard": [2, 2]}})
    assert await raw.closed() == 4010
    assert [v.kind for v in emu.gateway_violations] == ["invalid-shard"]
    emu.gateway_violations.clear()
    assert emu.identifies == []


async def test_session_start_total_is_counted(gateway: RawGateway) -> None:
    emu = gateway.emu
    emu.session_start_limit.max_concurrency = 2
    emu.session_start_limit.remaining = 1
    await gateway.identify((0, 2))
    assert emu.gateway_violations == []
    await gateway.identify((1, 2))
    assert [v.kind for v in emu.gateway_violations] == ["session-start-limit"]
    emu.gateway_violations.clear()


# ------------------------------------------------------------ discord.AutoShardedBot


class PanelView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Press", custom_id="sharded:press")
    async def press(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        assert interaction.guild is not None
        await interaction.response.edit_message(content=f"pressed {interaction.guild.name}")


class ShardedBot(commands.AutoShardedBot):
    def __init__(self, *, pace: float = 0.0, **kwargs: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
            **kwargs,
        )
        self.pace = pace

        @self.tree.command(description="Which shard runs this guild")
        async def where(interaction: discord.Interaction) -> None:
            assert interaction.guild is not None
            await interaction.response.send_message(f"shard {interaction.guild.shard_id}")

        @self.tree.command(description="A button")
        async def panel(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("panel", view=PanelView())

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py sleeps 5 s before every IDENTIFY but the first; ``pace`` instead."""
        if not initial:
            await asyncio.sleep(self.pace)

    async def setup_hook(self) -> None:
        await self.tree.sync()

    def session_of(self, shard_id: int) -> str | None:
        shard = self.get_shard(shard_id)
        assert shard is not None
        return shard._parent.ws.session_id  # the session discord.py holds for that shard


async def _run(emu: DiscordEmulator, bot: ShardedBot, **ready: Any) -> asyncio.Task[None]:
    task = asyncio.create_task(bot.start(emu.bot_token))
    try:
        await emu.wait_ready(timeout=10, **ready)
    except BaseException:
        await _close(bot, task)
        raise
    return task


async def _close(bot: ShardedBot, task: asyncio.Task[None]) -> None:
    await bot.close()
    async with asyncio.timeout(5):
        await task


async def test_auto_sharded_client_gets_each_shard_its_guilds(
    discord_at_emu: DiscordEmulator,
) -> None:
    emu = discord_at_emu
    emu.session_start_limit.max_concurrency = 2
    on_one = emu.add_guild_on_shard(1, 2, name="one")
    on_zero = emu.add_guild_on_shard(0, 2, name="zero")
    bot = ShardedBot(shard_count=2)
    task = await _run(emu, bot)
    try:
        assert sorted(r.shard for r in emu.identifies) == [(0, 2), (1, 2)]
        assert emu.gateway_violations == []
        for session in emu.gateway.current():
            ready = session.events[0]["d"]
            expected = _ids_on(emu, session.shard_id, 2)
            assert {g["id"] for g in ready["guilds"]} == expected
        async with asyncio.timeout(5):
            await bot.wait_until_ready()
        assert {g.id for g in bot.guilds} == set(emu.guilds)
        guild = bot.get_guild(on_one.id)
        assert guild is not None and guild.shard_id == 1

        handle = await emu.slash("where", channel=on_one.system_channel)
        assert (await handle.wait_original()).content == "shard 1"
        assert handle.shard_id == 1 and handle.session_ids == [bot.session_of(1)]
        handle = await emu.slash("where", channel=on_zero.system_channel)
        assert (await handle.wait_original()).content == "shard 0"
        assert handle.session_ids == [bot.session_of(0)]

        panel = await (await emu.slash("panel", channel=on_one.system_channel)).wait_original()
        press = await emu.press(panel, "sharded:press")
        assert (await press.first_response()).type == 7 and press.shard_id == 1
        assert panel.content == "pressed one"
        assert press.user.id in on_one.members and press.user.id not in emu.guild.members
    finally:
        await _close(bot, task)


async def test_auto_sharded_client_identifying_too_fast_is_flagged(
    discord_at_emu: DiscordEmulator,
) -> None:
    emu = discord_at_emu
    bot = ShardedBot(shard_count=2)  # max_concurrency 1, no pause between shards
    task = await _run(emu, bot)
    await _close(bot, task)
    assert [v.kind for v in emu.gateway_violations] == ["identify-too-soon"]
    emu.gateway_violations.clear()


async def test_auto_sharded_client_paced_by_the_bucket_interval(
    discord_at_emu: DiscordEmulator,
) -> None:
    emu = discord_at_emu
    emu.identify_interval = 0.2
    emu.recommended_shards = 2  # no shard_count: the bot asks GET /gateway/bot
    bot = ShardedBot(pace=0.3)
    task = await _run(emu, bot)
    await _close(bot, task)
    first, second = emu.identifies
    assert second.at - first.at >= 0.2 and second.shard == (1, 2)
    assert emu.count_requests("GET", "/gateway/bot") == 1
    assert emu.gateway_violations == []


async def test_two_processes_each_run_one_shard(discord_at_emu: DiscordEmulator) -> None:
    """Two clients, each with its own shard, as two ``python bot.py`` would run."""
    emu = discord_at_emu
    emu.session_start_limit.max_concurrency = 2
    on_one = emu.add_guild_on_shard(1, 2)
    first = ShardedBot(shard_count=2, shard_ids=[0])
    first_task = await _run(emu, first, shard_id=0)
    try:
        with pytest.raises(RuntimeError, match="no bot has identified"):
            await emu.slash("where", channel=on_one.system_channel)  # nobody runs shard 1
        second = ShardedBot(shard_count=2, shard_ids=[1])
        second_task = await _run(emu, second, shard_id=1)
        try:
            await emu.wait_ready()
            handle = await emu.slash("where", channel=on_one.system_channel)
            assert (await handle.wait_original()).content == "shard 1"
            assert handle.session_ids == [second.session_of(1)]
            assert [(r.shard, r.connection) for r in emu.identifies] == [((0, 2), 1), ((1, 2), 2)]
        finally:
            await _close(second, second_task)
    finally:
        await _close(first, first_task)
