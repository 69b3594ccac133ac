"""Several processes on one PostgreSQL, and PostgreSQL going away under them.

``python bot.py --http-only`` can run as N processes behind a load balancer: limits hold
across them because admission is one step in the store. A database restart cuts every
connection: the processes reconnect, and nothing is lost or done twice.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from services.store import open_store
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotProcess
from tests.helpers.databases import PG_URL, fresh_database
from tests.helpers.pgserver import PostgresServer, server_binaries
from tests.helpers.store import recent_generations
from tests.test_admission import finish_every_prediction
from tests.test_http_api import Answer, Api, ApiServer, api_env

pytestmark = pytest.mark.timeout(120)

LISTENING = re.compile(r"web server listening on http://[\d.]+:(\d+)")


async def http_only(env: dict[str, str], folder: Path) -> tuple[BotProcess, int]:
    proc = BotProcess(env, cwd=folder, args=("--http-only",))
    await proc.start()
    line = await proc.wait_for_log("web server listening", timeout=20)
    match = LISTENING.search(line)
    assert match, line
    return proc, int(match.group(1))


@pytest.fixture
async def two_api_processes(
    replicate_emu: ReplicateEmulator, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[list[Api]]:
    """Two ``--http-only`` processes on one PostgreSQL database; settings from the
    test's ``limits`` marker."""
    if PG_URL is None:
        pytest.skip("needs TEST_POSTGRES_URL (scripts/with-postgres)")
    marker = request.node.get_closest_marker("limits")
    limits = dict(marker.kwargs) if marker else {}
    procs: list[BotProcess] = []
    async with fresh_database("postgresql", tmp_path) as url, aiohttp.ClientSession() as http:
        try:
            apis = []
            for _ in range(2):
                env = api_env(replicate_emu, tmp_path, DATABASE_URL=url, HTTP_PORT="0", **limits)
                env["LOG_LEVEL"] = "INFO"
                proc, port = await http_only(env, tmp_path)
                procs.append(proc)
                apis.append(Api(f"http://127.0.0.1:{port}", http))
            yield apis
        finally:
            for proc in procs:
                await proc.kill()


async def burst(apis: list[Api], n: int = 50) -> asyncio.Future[list[Answer]]:
    return asyncio.gather(*(apis[i % 2].generate(prompt=f"p{i}") for i in range(n)))


@pytest.mark.limits(MAX_CONCURRENT_GENERATIONS="4", MAX_QUEUED_GENERATIONS="20")
async def test_two_api_processes_share_the_cap_and_the_queue(
    two_api_processes: list[Api], replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.prediction_mode = "manual"
    answers = await burst(two_api_processes)
    await finish_every_prediction(replicate_emu, 24)
    statuses = sorted(a.status for a in await answers)
    assert statuses == [200] * 24 + [429] * 26
    assert 1 <= replicate_emu.peak_running_predictions <= 4, "the global cap held"


@pytest.mark.limits(GENERATIONS_PER_USER_PER_DAY="10", MAX_QUEUED_GENERATIONS="100")
async def test_two_api_processes_share_a_token_s_quota(
    two_api_processes: list[Api], replicate_emu: ReplicateEmulator
) -> None:
    statuses = sorted(a.status for a in await (await burst(two_api_processes)))
    assert statuses == [200] * 10 + [429] * 40
    assert replicate_emu.counts["predictions_created"] == 10


@pytest.fixture
async def own_postgres() -> AsyncIterator[PostgresServer]:
    if server_binaries() is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    server = PostgresServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_database_restart_under_load_loses_and_doubles_nothing(
    own_postgres: PostgresServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    """Ten jobs running when PostgreSQL restarts: the process reconnects, every job
    ends once with its image, and new work is admitted as before."""
    (tmp_path / "train").mkdir()
    replicate_emu.prediction_mode = "manual"
    server = ApiServer(replicate_emu, tmp_path, own_postgres.url)
    try:
        api = await server.start(MAX_CONCURRENT_GENERATIONS="10", JOB_LEASE_SECONDS="3")
        answers = asyncio.gather(*(api.generate(prompt=f"p{i}") for i in range(10)))
        await replicate_emu.wait_for(lambda: replicate_emu.running_predictions == 10, timeout=10)
        await own_postgres.restart()
        for prediction in list(replicate_emu.predictions.values()):
            await replicate_emu.complete_prediction(prediction.id)
        assert [a.status for a in await answers] == [200] * 10
        after = asyncio.ensure_future(api.generate(prompt="after the restart"))
        await finish_every_prediction(replicate_emu, 1)
        assert (await after).status == 200
    finally:
        await server.stop()
    assert replicate_emu.counts["predictions_created"] == 11
    store = await open_store(own_postgres.url)
    try:
        jobs = await recent_generations(store, limit=20)
    finally:
        await store.close()
    assert len(jobs) == 11 and {j.status for j in jobs} == {"succeeded"}
