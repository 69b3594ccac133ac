"""How the bots of a load run are laid out, and the PostgreSQL server they may share.

A :class:`Topology` says which store the bots use, how many ``python bot.py`` processes
run, which Discord shards each runs, or whether they are ``--http-only`` web servers.
:class:`Postgres` is the database server of one invocation: a throwaway server started
and stopped here (or the one ``TEST_POSTGRES_URL`` names, as ``scripts/with-postgres``
sets it), with a fresh database for every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.common import cpu_seconds, proc_status_kb
from services.store import normalize_database_url
from tests.emulators.discord import DiscordEmulator, Guild
from tests.helpers.pgserver import PostgresServer
from tests.helpers.ports import free_port


@dataclass(frozen=True)
class Topology:
    """The bots of one run."""

    database: Literal["sqlite", "postgres"] = "sqlite"
    processes: int = 1
    #: ``SHARD_COUNT``; 0 leaves it unset (Discord's recommendation: 1 shard here).
    shards: int = 0
    http_only: bool = False

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError("need at least one process")
        if self.shards and self.shards < self.processes:
            raise ValueError("every process needs a shard: --shards must be >= --processes")
        if self.shards and self.http_only:
            raise ValueError("--http-only processes run no shards")
        if self.processes > 1 and self.database == "sqlite":
            raise ValueError("several processes share a PostgreSQL store: --database postgres")

    @property
    def label(self) -> str:
        store = "SQLite" if self.database == "sqlite" else "PostgreSQL"
        kind = "--http-only" if self.http_only else "bot"
        shards = f", {self.shards} shards" if self.shards else ""
        return f"{store}, {self.processes} x {kind}{shards}"

    @property
    def plain(self) -> bool:
        """The load benchmark as it was first written: one bot on SQLite."""
        return (
            self.database == "sqlite"
            and self.processes == 1
            and not self.shards
            and (not self.http_only)
        )

    def shard_ids(self, index: int) -> list[int]:
        """The shards process ``index`` runs: every ``processes``-th from ``index``."""
        return list(range(index, self.shards, self.processes))

    def process_of_shard(self, shard_id: int) -> int:
        return shard_id % self.processes if self.shards else 0

    def process_settings(self) -> list[dict[str, str]]:
        """Each process's own settings: its shards, or its web server's port."""
        out: list[dict[str, str]] = []
        for index in range(self.processes):
            own: dict[str, str] = {}
            if self.shards:
                own["SHARD_COUNT"] = str(self.shards)
                own["SHARD_IDS"] = ",".join(str(s) for s in self.shard_ids(index))
            if self.http_only:
                own["HTTP_PORT"] = str(free_port())
            out.append(own)
        return out

    def process_label(self, index: int) -> str:
        if self.shards:
            ids = ",".join(str(s) for s in self.shard_ids(index))
            return f"process {index + 1} (shard {ids} of {self.shards})"
        return f"process {index + 1}"


def shard_guilds(discord: DiscordEmulator, shards: int) -> list[Guild]:
    """One server on each shard (Discord's recommendation set to ``shards``, every bucket
    allowed to identify at once), every emulated user a member of each."""
    discord.recommended_shards = shards
    discord.session_start_limit.max_concurrency = shards
    users = [m.user for m in discord.guild.members.values() if not m.user.bot]
    guilds = [discord.add_guild_on_shard(shard, shards) for shard in range(shards)]
    for guild in guilds:
        for user in users:
            discord.add_member(user, guild)
    return guilds


class Postgres:
    """A PostgreSQL server for the runs of one invocation, and a fresh database per run.

    Without ``TEST_POSTGRES_URL`` the server is started here (``tests/helpers/pgserver.py``:
    a new folder under the system's temporary folder, fsync off) and stopped and deleted by
    :meth:`stop`; its processes' CPU time is then read from ``/proc``."""

    def __init__(self) -> None:
        self.server: PostgresServer | None = None
        self.admin_url: URL | None = None

    async def start(self) -> None:
        given = os.environ.get("TEST_POSTGRES_URL")
        if given:
            self.admin_url = normalize_database_url(given)
            return
        self.server = PostgresServer()
        await self.server.start()
        self.admin_url = normalize_database_url(self.server.url)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """The ``DATABASE_URL`` of a new, empty database, dropped afterwards."""
        assert self.admin_url is not None, "start() first"
        name = f"bench_{uuid.uuid4().hex[:12]}"
        admin = create_async_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            try:
                yield self.admin_url.set(database=name, drivername="postgresql").render_as_string(
                    hide_password=False
                )
            finally:
                async with admin.connect() as conn:
                    await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.dispose()

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the server's processes (the postmaster, its reaped
        children and its live backends); None for a server not started here."""
        if self.server is None:
            return None
        try:
            postmaster = int((self.server.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid, ppid = int(stat.parent.name), int(fields[1])
                if pid == postmaster:
                    ticks += sum(int(f) for f in fields[11:15])  # own and reaped children's
                elif ppid == postmaster:
                    ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def store_of(topology: Topology, postgres: Postgres | None) -> AsyncIterator[str | None]:
    """The ``DATABASE_URL`` of a run: None for SQLite (a new file in the run's folder)."""
    if topology.database == "sqlite":
        yield None
        return
    assert postgres is not None
    async with postgres.database() as url:
        yield url


class Meter:
    """CPU time and peak memory of each bot process (and the database server's CPU time)
    from :meth:`begin` to :meth:`end`."""

    SAMPLE_EVERY = 0.02

    def __init__(self, pids: list[int], postgres: Postgres | None = None) -> None:
        self.pids = pids
        self.postgres = postgres
        self._cpu: list[float | None] = []
        self._db: float | None = None
        #: (monotonic time, CPU seconds of all the bot processes, of this process: the
        #: emulators) every SAMPLE_EVERY.
        self.samples: list[tuple[float, float, float]] = []
        self._sampler: asyncio.Task[None] | None = None

    def begin(self) -> None:
        self._cpu = [cpu_seconds(pid) for pid in self.pids]
        self._db = None if self.postgres is None else self.postgres.cpu_seconds()
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self._take_sample()
            await asyncio.sleep(self.SAMPLE_EVERY)

    def _take_sample(self) -> None:
        cpus = [cpu_seconds(pid) for pid in self.pids]
        if None not in cpus:
            bots = sum(c for c in cpus if c is not None)
            self.samples.append((time.monotonic(), bots, time.process_time()))

    def cpu_between(self, start: float, end: float, *, emulators: bool = False) -> float | None:
        """CPU seconds the bots (or the emulators) used from ``start`` to ``end``
        (monotonic), to within a sample and a clock tick."""
        column = 2 if emulators else 1
        before = [sample[column] for sample in self.samples if sample[0] <= start]
        after = [sample[column] for sample in self.samples if sample[0] >= end]
        if not before or not after:
            return None
        return after[0] - before[-1]

    def end(self) -> dict[str, Any]:
        """``cpu_s`` (all processes), ``peak_rss_mb`` (the largest), ``db_cpu_s`` and,
        in ``processes``, each process's ``cpu_s`` and ``peak_rss_mb``."""
        if self._sampler is not None:
            self._sampler.cancel()
            self._take_sample()
        processes = []
        for pid, before in zip(self.pids, self._cpu, strict=True):
            after = cpu_seconds(pid)
            peak_kb = proc_status_kb(pid, "VmHWM")
            processes.append(
                {
                    "pid": pid,
                    "cpu_s": None if before is None or after is None else after - before,
                    "peak_rss_mb": None if peak_kb is None else peak_kb / 1024,
                }
            )
        cpus = [p["cpu_s"] for p in processes]
        peaks = [p["peak_rss_mb"] for p in processes if p["peak_rss_mb"] is not None]
        db_after = None if self.postgres is None else self.postgres.cpu_seconds()
        return {
            "cpu_s": None if None in cpus else sum(cpus),
            "peak_rss_mb": max(peaks) if peaks else None,
            "db_cpu_s": None if self._db is None or db_after is None else db_after - self._db,
            "processes": processes,
        }
