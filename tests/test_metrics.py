"""GET /metrics: Prometheus' text format, read back with prometheus-client's own parser,
and counting exactly what a scripted run did; several processes on one machine report
together."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.emulators.discord import DiscordEmulator, Perm
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness, BotProcess
from tests.helpers.ports import free_port
from tests.test_http_api import TOKEN, ApiServer, api_env

Samples = Counter[tuple[str, tuple[tuple[str, str], ...]]]


def parse(text: str) -> Samples:
    samples: Samples = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(base_url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base_url}/metrics", headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await r.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_count_a_scripted_run(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    port = free_port()
    await harness.start(HTTP_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    before = await scrape(base)
    admin = discord_emu.add_user("admin", permissions=Perm.MANAGE_GUILD)

    for prompt in ("a", "b"):
        handle = await discord_emu.slash("generate", options={"prompt": prompt})
        await handle.wait_original(lambda m: len(m.attachments) == 1, timeout=10)
    replicate_emu.fail_next_prediction("CUDA out of memory")
    failed = await discord_emu.slash("generate", options={"prompt": "c"})
    await failed.wait_original(lambda m: m.content.startswith("❌"), timeout=10)
    # Discord says "slow down" once to the answer of an interaction: discord.py waits.
    discord_emu.fail_next("POST", r"/interactions/\d+/[^/]+/callback", 429, retry_after=0.01)
    shown = await discord_emu.slash("settings show", user=admin)
    await shown.first_response(timeout=5)
    async with aiohttp.ClientSession() as http:
        forged = {"id": "p1", "status": "succeeded"}
        async with http.post(f"{base}/webhooks/replicate", json=forged) as response:
            assert response.status == 401

    after = await scrape(base)
    delta = Counter({key: after[key] - before.get(key, 0) for key in after})

    def changed(name: str, **labels: str) -> float:
        return round(value(delta, name, **labels), 9)

    assert changed("imagebot_interactions_total", command="/generate") == 3
    assert changed("imagebot_interactions_total", command="/settings show") == 1
    assert changed("imagebot_jobs_total", kind="generation", outcome="succeeded") == 2
    assert changed("imagebot_jobs_total", kind="generation", outcome="failed") == 1
    route = "POST /v1/models/{}/{}/predictions"
    assert changed("imagebot_replicate_requests_total", route=route, status="201") == 3
    assert (
        changed(
            "imagebot_replicate_requests_total",
            route="GET /v1/webhooks/default/secret",
            status="200",
        )
        == 1
    )
    assert changed("imagebot_discord_rate_limits_total", scope="interaction") == 1
    assert changed("imagebot_webhook_deliveries_total", result="rejected") == 1
    assert changed("imagebot_estimated_spend_usd_total", kind="generation") == 0.006
    assert changed("imagebot_job_latency_seconds_count", kind="generation") == 3
    assert changed("imagebot_job_overhead_seconds_count", kind="generation") == 2
    assert value(after, "imagebot_job_overhead_seconds_sum", kind="generation") >= 0
    assert value(after, "imagebot_queue_length") == 0
    assert value(after, "imagebot_running_jobs", kind="generation") == 0
    assert (("imagebot_running_jobs", (("kind", "training"),))) in after


async def test_metrics_token(replicate_emu: ReplicateEmulator, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    server = ApiServer(replicate_emu, tmp_path)
    try:
        api = await server.start(METRICS_TOKEN="scrape-secret-123")
        for token in (None, TOKEN):
            answer = await api.call("GET", "/metrics", token=token)
            assert answer.status == 401 and "METRICS_TOKEN" in answer.detail
        answer = await api.call("GET", "/metrics", token="scrape-secret-123")
        assert answer.status == 200
        assert "imagebot_jobs_total" in {
            f.name + "_total" for f in text_string_to_metric_families(answer.body.decode())
        }
    finally:
        await server.stop()


async def test_processes_on_one_machine_report_together(
    replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, a process serves the sum of every process's
    metrics: a job run by one is counted by the other."""
    shared = tmp_path / "prometheus"
    shared.mkdir()
    (tmp_path / "train").mkdir()
    ports = [free_port(), free_port()]
    processes = [
        BotProcess(
            api_env(
                replicate_emu,
                tmp_path,
                HTTP_PORT=str(port),
                LOG_LEVEL="INFO",
                PROMETHEUS_MULTIPROC_DIR=str(shared),
            ),
            cwd=tmp_path,
            args=("--http-only",),
        )
        for port in ports
    ]
    try:
        for process in processes:
            await process.start()
            await process.wait_for_log("web server listening", timeout=30)
        first, second = (f"http://127.0.0.1:{port}" for port in ports)
        async with aiohttp.ClientSession() as http:
            body = {"prompt": "a lighthouse"}
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(f"{first}/image/generate", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
        samples = await scrape(second)
        assert value(samples, "imagebot_jobs_total", kind="generation", outcome="succeeded") == 1
        route = "POST /v1/models/{}/{}/predictions"
        assert value(samples, "imagebot_replicate_requests_total", route=route, status="201") == 1
        assert value(samples, "imagebot_queue_length") == 0
    finally:
        for process in processes:
            process.signal(signal.SIGTERM)
        await asyncio.gather(*(p.wait() for p in processes), return_exceptions=True)
        for process in processes:
            await process.kill()
    assert all("Traceback" not in p.output for p in processes), processes[0].output
