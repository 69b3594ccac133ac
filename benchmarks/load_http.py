"""The load benchmark through the HTTP API: N ``POST /image/generate`` at once, spread
over one or several ``python bot.py --http-only`` processes (as a load balancer would).

The answer to ``POST /image/generate`` is the image itself, so the figure that stands for
the first answer is request -> response (the whole body read); the overhead over L is the
prediction finished on Replicate -> the response read by the client. The client runs in
the benchmark's process, beside the emulators, with no limit on its connections.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp

from benchmarks.cluster import Meter, Postgres, Topology
from benchmarks.common import Figure, percentile, running_stack
from benchmarks.load_discord import shared_figures

TOKEN = "bench-api-token-0123456789"


@dataclass
class Reply:
    """One ``POST /image/generate`` as the client saw it (monotonic clock)."""

    index: int
    process: int
    status: int
    sent: float
    done: float
    prediction_id: str | None

    @property
    def ms(self) -> float:
        return (self.done - self.sent) * 1000.0


async def post_all(
    http: aiohttp.ClientSession, ports: list[int], n: int, prefix: str
) -> list[Reply]:
    """``n`` requests at once, request ``i`` to the ``i % len(ports)``-th process."""

    async def one(index: int) -> Reply:
        process = index % len(ports)
        url = f"http://127.0.0.1:{ports[process]}/image/generate"
        sent = time.monotonic()
        try:
            async with http.post(
                url,
                json={"prompt": f"{prefix} {index}"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as response:
                await response.read()
                status, prediction = response.status, response.headers.get("X-Prediction-Id")
        except aiohttp.ClientError as exc:
            print(f"request {index}: {exc!r}", file=sys.stderr)
            status, prediction = 0, None
        return Reply(index, process, status, sent, time.monotonic(), prediction)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def measure_http(
    args: argparse.Namespace,
    topology: Topology,
    database_url: str | None,
    postgres: Postgres | None,
    *,
    n: int,
    cap: int,
    per_day: int = 0,
    warm: bool = True,
) -> dict[str, Any]:
    """One burst of ``n`` requests against ``topology``'s ``--http-only`` processes, with
    ``MAX_CONCURRENT_GENERATIONS=cap`` and a daily quota of ``per_day`` for the one API
    token (0: none). ``warm``: one generation per process first (it would use quota)."""
    random.seed(args.seed)
    settings = {
        "MAX_CONCURRENT_GENERATIONS": str(cap),
        "MAX_QUEUED_GENERATIONS": str(max(n, 20)),
        "GENERATE_COOLDOWN_SECONDS": "0",
        "GENERATIONS_PER_USER_PER_DAY": str(per_day),
        "API_TOKEN": TOKEN,
        "HTTP_HOST": "127.0.0.1",
        **dict(item.split("=", 1) for item in args.set),
    }
    if database_url is not None:
        settings["DATABASE_URL"] = database_url
    async with (
        running_stack(
            validate=args.validate,
            processes=topology.process_settings(),
            bot_args=("--http-only",),
            **settings,
        ) as stack,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):
        replicate = stack.replicate
        replicate.prediction_latency = args.latency
        ports = stack.http_ports
        for port in ports:  # the store's pool and the Replicate client, in every process
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                await response.read()
        if warm:
            for port in ports:
                await post_all(http, [port], 1, "warm up")

        replicate_before = replicate.counts["requests"]
        downloads_before = len(replicate.output_requests)
        created_before = replicate.counts["predictions_created"]
        meter = Meter(stack.pids, postgres)
        meter.begin()
        emu_cpu_before = time.process_time()
        started = time.monotonic()
        try:
            async with asyncio.timeout(args.timeout):
                replies = await post_all(http, ports, n, "load test image")
        except TimeoutError:
            print(f"the {n} requests did not all end within --timeout", file=sys.stderr)
            replies = []
        finished = time.monotonic()
        metered = meter.end()
        emu_cpu = time.process_time() - emu_cpu_before

        wall_minus_monotonic = time.time() - time.monotonic()
        overheads_ms: list[float] = []
        creates_ms: list[float] = []
        for reply in replies:
            job = replicate.predictions.get(reply.prediction_id or "")
            if reply.status != 200 or job is None or job.completed_at is None:
                continue
            done_wall = reply.done + wall_minus_monotonic
            overheads_ms.append((done_wall - job.completed_at.timestamp()) * 1000.0)
            creates_ms.append(
                (job.created_at.timestamp() - reply.sent - wall_minus_monotonic) * 1e3
            )
        received = Counter(r.process for r in replies if r.status == 200)
        for index, process in enumerate(metered["processes"]):
            process["label"] = f"process {index + 1} (port {ports[index]})"
            process["generations"] = received[index]
        ok = [r for r in replies if r.status == 200]
        counts = {
            "replicate_api_requests": replicate.counts["requests"] - replicate_before,
            "replicate_downloads": len(replicate.output_requests) - downloads_before,
            "predictions_created": replicate.counts["predictions_created"] - created_before,
            "statuses": dict(sorted(Counter(r.status for r in replies).items())),
            "failed": n - len(ok),
        }
        peak_running = replicate.peak_running_predictions
    return {
        "samples": {
            "response_ms": [r.ms for r in ok],
            "refused_ms": [r.ms for r in replies if r.status == 429],
            "overhead_ms": overheads_ms,
            "create_ms": creates_ms,
        },
        "counts": counts,
        "wall_s": (max(r.done for r in ok) - started) if ok else finished - started,
        **metered,
        "emulator_cpu_s": emu_cpu,
        "window_s": finished - started,
        "cap": cap,
        "per_day": per_day,
        "requests": n,
        "peak_running": peak_running,
        "exit_code": stack.exit_code,
    }


def http_figures(args: argparse.Namespace, result: dict[str, Any]) -> list[Figure]:
    """The load figures of the HTTP API, as ``figures_of`` gives them for Discord."""
    n = result["requests"]
    samples = result["samples"]
    rs, oh, cr = samples["response_ms"], samples["overhead_ms"], samples["create_ms"]
    done = n - result["counts"]["failed"]
    others = {k: v for k, v in result["counts"]["statuses"].items() if k != 200}
    return [
        Figure("requests", n),
        Figure("images returned (200)", done, target=f"= {n}", ok=done == n),
        Figure("other answers", sum(others.values()), target="= 0", ok=not others),
        Figure("request -> image p50", percentile(rs, 50), "ms"),
        Figure("request -> image p95", percentile(rs, 95), "ms"),
        Figure("request -> image p99", percentile(rs, 99), "ms"),
        Figure("request -> image max", max(rs) if rs else None, "ms"),
        Figure("sent -> prediction created p50", percentile(cr, 50), "ms"),
        Figure("sent -> prediction created p99", percentile(cr, 99), "ms"),
        Figure("overhead over L p50", percentile(oh, 50), "ms"),
        Figure("overhead over L p99", percentile(oh, 99), "ms"),
        Figure("overhead over L max", max(oh) if oh else None, "ms"),
        Figure("wall time / L", result["wall_s"] / args.latency),
        *shared_figures(result, n),
    ]


def quota_figures(result: dict[str, Any]) -> list[Figure]:
    """A burst against a daily quota: exactly the quota admitted, the rest refused."""
    n, per_day = result["requests"], result["per_day"]
    statuses = result["counts"]["statuses"]
    admitted, refused = statuses.get(200, 0), statuses.get(429, 0)
    created = result["counts"]["predictions_created"]
    refusals = result["samples"]["refused_ms"]
    others = {k: v for k, v in statuses.items() if k not in (200, 429)}
    return [
        Figure("requests at once", n),
        Figure(
            "admitted (200, image returned)",
            admitted,
            target=f"= {per_day}",
            ok=admitted == per_day,
        ),
        Figure("refused (429)", refused, target=f"= {n - per_day}", ok=refused == n - per_day),
        Figure("other answers", sum(others.values()), target="= 0", ok=not others),
        Figure("predictions created", created, target=f"= {per_day}", ok=created == per_day),
        Figure("request -> 429 p50", percentile(refusals, 50), "ms"),
        Figure("request -> 429 p99", percentile(refusals, 99), "ms"),
        Figure("request -> 429 max", max(refusals) if refusals else None, "ms"),
    ]
