"""Two ``python bot.py`` processes, each running one of two shards, on one PostgreSQL.

The Discord emulator has a server on each shard; Discord sends each server's
interactions to the process that runs its shard. Limits, jobs and notices live in the
store, so they hold across both, and a process that dies has its jobs finished by the
other.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.store import Generation, open_store
from tests.emulators.discord import DiscordEmulator, Message
from tests.emulators.discord.model import Channel, Guild, User
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotProcess, bot_env
from tests.helpers.databases import PG_URL, fresh_database
from tests.test_train import FAST, is_notice, started_training

pytestmark = [
    pytest.mark.skipif(PG_URL is None, reason="needs TEST_POSTGRES_URL (scripts/with-postgres)"),
    pytest.mark.timeout(120),
]

LISTENING = re.compile(r"web server listening on http://[\d.]+:(\d+)")


@dataclass
class Cluster:
    """Two bot processes (shard 0 and shard 1 of 2) and a server on each shard."""

    discord: DiscordEmulator
    replicate: ReplicateEmulator
    database_url: str
    folder: Path
    guilds: tuple[Guild, Guild]
    procs: dict[int, BotProcess]

    def channel(self, shard: int) -> Channel:
        return self.guilds[shard].system_channel

    def env(self, shard: int, **overrides: str) -> dict[str, str]:
        return bot_env(
            self.discord,
            self.replicate,
            self.folder,
            DATABASE_URL=self.database_url,
            SHARD_COUNT="2",
            SHARD_IDS=str(shard),
            JOB_LEASE_SECONDS="3",
            LOG_LEVEL="INFO",
            **overrides,
        )

    async def start(self, shard: int, **overrides: str) -> BotProcess:
        proc = BotProcess(self.env(shard, **overrides), cwd=self.folder)
        self.procs[shard] = proc
        await proc.start()
        await proc.wait_for_log("ready as", timeout=30)
        return proc

    def member(self, name: str) -> User:
        """A user who is a member of both servers."""
        user = self.discord.add_user(name, guild=self.guilds[0])
        self.discord.add_member(user, self.guilds[1])
        return user

    async def generation(self, gen_id: str) -> Generation:
        store = await open_store(self.database_url)
        try:
            found = await store.get_generation(gen_id)
        finally:
            await store.close()
        assert found is not None
        return found

    async def generations(self) -> list[Generation]:
        store = await open_store(self.database_url)
        try:
            from tests.helpers.store import recent_generations

            return await recent_generations(store, limit=100)
        finally:
            await store.close()


@pytest.fixture
async def cluster(
    discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> AsyncIterator[Cluster]:
    discord_emu.recommended_shards = 2
    discord_emu.session_start_limit.max_concurrency = 2  # shards 0 and 1 identify together
    guilds = (discord_emu.add_guild_on_shard(0, 2), discord_emu.add_guild_on_shard(1, 2))
    async with fresh_database("postgresql", tmp_path) as url:
        c = Cluster(discord_emu, replicate_emu, url, tmp_path, guilds, {})
        try:
            yield c
        finally:
            for proc in c.procs.values():
                await proc.kill()


def images_for(user: User) -> Callable[[Message], bool]:
    return lambda m: user.id in m.pinged_user_ids() and len(m.attachments) == 1


def pid_of(generation: Generation) -> int:
    """The pid in a lease owner's name (``host:pid:random``)."""
    assert generation.lease_owner is not None
    return int(generation.lease_owner.split(":")[-2])


async def test_each_process_answers_its_shard_and_syncs_once(cluster: Cluster) -> None:
    first = await cluster.start(0)
    second = await cluster.start(1)
    alice = cluster.member("alice")
    handles = [
        await cluster.discord.slash(
            "generate", options={"prompt": f"p{shard}"}, user=alice, channel=cluster.channel(shard)
        )
        for shard in (0, 1)
    ]
    for shard, handle in enumerate(handles):
        await handle.wait_original(lambda m: len(m.attachments) == 1, timeout=15)
        assert handle.shard_id == shard
    jobs = {g.prompt: g for g in await cluster.generations()}
    assert pid_of(jobs["p0"]) == first.proc.pid  # type: ignore[union-attr]
    assert pid_of(jobs["p1"]) == second.proc.pid  # type: ignore[union-attr]
    assert sum(cluster.discord.sync_counts.values()) == 1, "commands synced once per deploy"
    assert sorted(i.shard_id for i in cluster.discord.identifies) == [0, 1]
    ping = await cluster.discord.slash("ping", user=alice, channel=cluster.channel(1))
    answer = await ping.first_response(timeout=5)
    assert "(shard 1 of 2)" in answer.data["content"]


async def test_the_cap_and_the_quota_hold_across_both_processes(cluster: Cluster) -> None:
    cluster.replicate.prediction_mode = "manual"
    limits = {"MAX_CONCURRENT_GENERATIONS": "2", "GENERATIONS_PER_USER_PER_DAY": "1"}
    await cluster.start(0, **limits)
    await cluster.start(1, **limits)
    users = [cluster.member(f"u{i}") for i in range(4)]
    handles = await asyncio.gather(
        *(
            cluster.discord.slash(
                "generate", options={"prompt": f"u{i}"}, user=user, channel=cluster.channel(i % 2)
            )
            for i, user in enumerate(users)
        )
    )
    for handle in handles:
        await handle.first_response(timeout=5)
    await cluster.replicate.wait_for(lambda: len(cluster.replicate.predictions) == 2, timeout=10)
    # The same user again, in the other server (the other process): the quota is spent.
    again = await cluster.discord.slash(
        "generate", options={"prompt": "again"}, user=users[0], channel=cluster.channel(1)
    )
    refusal = await again.first_response(timeout=5)
    assert "used your 1 generations" in refusal.data["content"]
    for _ in range(4):
        pending = next(p for p in cluster.replicate.predictions.values() if not p.finished)
        await cluster.replicate.complete_prediction(pending.id)
        await cluster.replicate.wait_for(
            lambda: (
                cluster.replicate.running_predictions >= 1
                or len(cluster.replicate.predictions) == 4
            ),
            timeout=10,
        )
    for handle in handles:
        await handle.wait_original(lambda m: len(m.attachments) == 1, timeout=15)
    assert 1 <= cluster.replicate.peak_running_predictions <= 2, "the global cap held"
    assert cluster.replicate.counts["predictions_created"] == 4


async def test_a_killed_process_has_its_job_finished_by_the_other(cluster: Cluster) -> None:
    cluster.replicate.prediction_mode = "manual"
    first = await cluster.start(0)
    second = await cluster.start(1)
    alice = cluster.member("alice")
    handle = await cluster.discord.slash(
        "generate", options={"prompt": "lighthouse"}, user=alice, channel=cluster.channel(0)
    )
    await handle.wait_original(lambda m: "Generating" in m.content, timeout=10)
    prediction = await cluster.replicate.wait_for(lambda: cluster.replicate.last_prediction)
    await first.kill()
    await cluster.replicate.complete_prediction(prediction.id)
    posted = await cluster.discord.wait_for_message(
        cluster.channel(0), images_for(alice), timeout=15
    )
    [job] = await cluster.generations()
    assert job.status == "succeeded" and pid_of(job) == second.proc.pid  # type: ignore[union-attr]

    # Back again: it runs shard 0 once more and takes nothing twice.
    await cluster.start(0)
    ping = await cluster.discord.slash("ping", user=alice, channel=cluster.channel(0))
    await ping.first_response(timeout=5)
    assert [m.id for m in cluster.discord.messages(cluster.channel(0)) if images_for(alice)(m)] == [
        posted.id
    ]
    assert cluster.replicate.counts["predictions_created"] == 1


async def test_a_process_started_beside_another_takes_none_of_its_jobs(cluster: Cluster) -> None:
    cluster.replicate.prediction_mode = "manual"
    first = await cluster.start(0)
    alice = cluster.member("alice")
    handle = await cluster.discord.slash(
        "generate", options={"prompt": "kept"}, user=alice, channel=cluster.channel(0)
    )
    await handle.wait_original(lambda m: "Generating" in m.content, timeout=10)
    await cluster.start(1)
    prediction = await cluster.replicate.wait_for(lambda: cluster.replicate.last_prediction)
    await cluster.replicate.complete_prediction(prediction.id)
    await handle.wait_original(lambda m: len(m.attachments) == 1, timeout=15)
    [job] = await cluster.generations()
    assert pid_of(job) == first.proc.pid  # type: ignore[union-attr]
    assert not [m for m in cluster.discord.messages(cluster.channel(0)) if m.webhook_id is None]


async def test_a_training_notice_goes_out_once_when_its_webhooks_reach_the_other_process(
    cluster: Cluster,
) -> None:
    """Shard 0's process starts the training; its webhooks are delivered to shard 1's
    process (as a load balancer in front of both would): one notice, in the channel."""
    cluster.replicate.training_mode = "manual"
    second = await cluster.start(1, HTTP_PORT="0", **FAST)
    port = LISTENING.search(second.output)
    assert port, second.output
    await cluster.start(0, PUBLIC_URL=f"http://127.0.0.1:{port.group(1)}", **FAST)
    alice = cluster.member("alice")
    await started_training(cluster.discord, cluster.folder, user=alice, channel=cluster.channel(0))
    job = cluster.replicate.last_training
    assert job.webhook and port.group(1) in job.webhook
    await cluster.replicate.complete_training(job.id)
    notice = await cluster.discord.wait_for_message(
        cluster.channel(0), lambda m: is_notice(m) and alice.id in m.pinged_user_ids(), 15
    )
    await cluster.replicate.wait_for(lambda: cluster.replicate.webhooks_pending() == 0)
    notices = [m for m in cluster.discord.messages(cluster.channel(0)) if is_notice(m)]
    assert [m.id for m in notices] == [notice.id]


async def test_identifies_of_one_bucket_wait_for_their_turn(
    discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    """With max_concurrency 1 both shards share one bucket: the second process waits
    (Discord allows one IDENTIFY per 5 s); the emulator fails the test if it did not."""
    discord_emu.recommended_shards = 2
    discord_emu.session_start_limit.max_concurrency = 1
    async with fresh_database("postgresql", tmp_path) as url:
        c = Cluster(discord_emu, replicate_emu, url, tmp_path, (discord_emu.guild,) * 2, {})
        try:
            await asyncio.gather(c.start(0), c.start(1))
        finally:
            for proc in c.procs.values():
                await proc.kill()
    first, second = sorted(discord_emu.identifies, key=lambda i: i.at)
    assert second.at - first.at >= 5.0
    assert any(
        "waits" in proc.output and "turn to identify" in proc.output for proc in c.procs.values()
    )
