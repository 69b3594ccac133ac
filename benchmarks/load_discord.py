"""The load benchmark through Discord: N /generate interactions sent at once to
``python bot.py`` (one process or several, each with its shards) and what they cost."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import random
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from benchmarks.cluster import Meter, Postgres, Topology, shard_guilds
from benchmarks.common import Figure, Ratio, at_most, below, percentile, running_stack
from tests.emulators.discord import DiscordEmulator, Guild, InteractionHandle, Message
from tests.helpers.ports import free_port

DEADLINE_S = 3.0


def images_of(handle: InteractionHandle, count: int) -> Message | None:
    message = handle.original
    if message is not None and len(message.attachments) == count:
        return message
    return None


def posted_at(message: Message) -> datetime:
    """When the version of the message that first carried the images reached Discord."""
    return next(v.at for v in message.history if v.attachment_records)


async def fire(
    discord: DiscordEmulator,
    guilds: list[Guild],
    n: int,
    users: int,
    count: int,
    ramp: float,
    prefix: str = "load test image",
) -> list[InteractionHandle]:
    """``n`` /generate from ``users`` users, spread over the channels of ``guilds``."""
    members = [m.user for m in guilds[0].members.values() if m.user.name.startswith("user")]
    members = members[:users]

    async def one(index: int) -> InteractionHandle:
        if ramp:
            await asyncio.sleep(ramp * index / n)
        return await discord.slash(
            "generate",
            options={"prompt": f"{prefix} {index}", "count": count},
            user=members[index % len(members)],
            channel=guilds[index % len(guilds)].system_channel,
            settle=False,
        )

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def measure(
    args: argparse.Namespace,
    script: Path | None = None,
    topology: Topology | None = None,
    database_url: str | None = None,
    postgres: Postgres | None = None,
) -> dict[str, Any]:
    """One run against ``python bot.py`` (or ``script``, with the same environment);
    with ``topology``, as many processes and shards as it says, on ``database_url``
    (None: a SQLite file of the run). ``postgres``: whose CPU time to count."""
    topology = topology or Topology()
    n = args.requests
    cap = args.concurrency or n
    random.seed(args.seed)
    settings = {
        "MAX_CONCURRENT_GENERATIONS": str(cap),
        "MAX_QUEUED_GENERATIONS": str(max(n, 20)),
        "GENERATE_COOLDOWN_SECONDS": "0",
        **dict(item.split("=", 1) for item in args.set),
    }
    if database_url is not None:
        settings["DATABASE_URL"] = database_url
    if args.webhooks:
        port = free_port()
        settings.setdefault("HTTP_PORT", str(port))
        settings.setdefault("PUBLIC_URL", f"http://127.0.0.1:{settings['HTTP_PORT']}")
    guilds: list[Guild] = []

    def prepare(discord: DiscordEmulator) -> None:
        if topology.shards:
            guilds.extend(shard_guilds(discord, topology.shards))
        else:
            guilds.append(discord.guild)

    baseline_ms = await transport_baseline(n)
    async with running_stack(
        validate=args.validate,
        users=args.users,
        ready_timeout=60.0,
        profile=args.profile if script is None else None,
        script=script,
        processes=topology.process_settings(),
        prepare=prepare,
        **settings,
    ) as stack:
        discord, replicate = stack.discord, stack.replicate
        replicate.prediction_latency = args.latency

        # One generation first in each server (each process), so that imports, pools and
        # caches are warm.
        for guild in guilds:
            warm = await discord.slash(
                "generate", options={"prompt": "warm up"}, channel=guild.system_channel
            )
            await warm.wait_original(lambda m: len(m.attachments) == 1, timeout=args.latency + 30)
        await discord.wait_until(lambda: discord._inflight == 0, timeout=10)

        replicate_before = replicate.counts["requests"]
        downloads_before = len(replicate.output_requests)
        discord_before = len(discord.requests)
        meter = Meter(stack.pids, postgres)
        meter.begin()
        emu_cpu_before = time.process_time()

        started = time.monotonic()
        handles = await fire(discord, guilds, n, args.users, args.count, args.ramp)
        # Checked on every change in the emulator: in order, stopping at the first not yet
        # done, so that the harness does not cost the emulators O(N) per change.
        pending = collections.deque(handles)

        def all_posted() -> bool:
            while pending:
                handle = pending[0]
                if images_of(handle, args.count) is None and (
                    handle.original is None or not handle.original.content.startswith("❌")
                ):
                    return False
                pending.popleft()
            return True

        try:
            await discord.wait_until(all_posted, timeout=args.timeout)
        except TimeoutError:
            print(f"{len(pending)} of {n} generations did not finish in time", file=sys.stderr)
        finished = time.monotonic()
        unfinished = len(pending)
        with contextlib.suppress(TimeoutError):
            await discord.wait_until(lambda: discord._inflight == 0, timeout=10)
        metered = meter.end()
        emu_cpu = time.process_time() - emu_cpu_before
        by_prompt = {job.input.get("prompt"): job for job in replicate.predictions.values()}
        callbacks_ms: list[float] = []
        overheads_ms: list[float] = []
        creates_ms: list[float] = []
        posted_times: list[float] = []
        wall_minus_monotonic = time.time() - time.monotonic()
        failed = late = 0
        errors: Counter[str] = Counter()
        # When each step of each job happened, on the monotonic clock.
        moments: dict[str, list[float]] = {step: [] for step in TIMELINE}
        for index, handle in enumerate(handles):
            if handle.sent is not None:
                moments["sent"].append(handle.sent)
            if handle.callback is not None and handle.sent is not None:
                callbacks_ms.append(
                    (handle.created + handle.callback.latency - handle.sent) * 1000.0
                )
                moments["answered"].append(handle.created + handle.callback.latency)
            if any(code == 10062 for _, code in handle.refused):
                late += 1
            message = images_of(handle, args.count)
            job = by_prompt.get(f"load test image {index}")
            if message is None or job is None or job.completed_at is None:
                failed += 1
                if handle.original is not None and handle.original.content.startswith("❌"):
                    errors[handle.original.content[:160]] += 1
                continue
            if handle.sent is not None:
                sent_wall = handle.sent + wall_minus_monotonic
                creates_ms.append((job.created_at.timestamp() - sent_wall) * 1000.0)
            at = posted_at(message)
            overheads_ms.append((at - job.completed_at).total_seconds() * 1000.0)
            posted_times.append(at.timestamp())
            moments["created"].append(job.created_at.timestamp() - wall_minus_monotonic)
            moments["finished"].append(job.completed_at.timestamp() - wall_minus_monotonic)
            moments["posted"].append(at.timestamp() - wall_minus_monotonic)
        # Wall time: from the first interaction sent (monotonic clock) to the last images
        # received (the emulator stamps message versions with the wall clock).
        first_sent = min(h.sent for h in handles if h.sent is not None)
        first_sent_wall = time.time() - (time.monotonic() - first_sent)
        wall = max(posted_times) - first_sent_wall if posted_times else finished - started
        # The bots' CPU in the two bursts: from the first interaction sent to the last
        # prediction created, and from the first prediction finished to the last images.
        phase_cpu: dict[str, float | None] = {}
        if moments["created"] and moments["posted"]:
            windows = {
                "intake": (first_sent, max(moments["created"])),
                "completion": (min(moments["finished"]), max(moments["posted"])),
            }
            for phase, (start, end) in windows.items():
                phase_cpu[phase] = meter.cpu_between(start, end)
                phase_cpu[f"{phase}_emulators"] = meter.cpu_between(start, end, emulators=True)
        samples = {
            "first_callback_ms": callbacks_ms,
            "overhead_ms": overheads_ms,
            "create_ms": creates_ms,
            **{
                f"{step}_after_first_sent_ms": [(t - first_sent) * 1000.0 for t in times]
                for step, times in moments.items()
            },
        }
        counts = {
            "replicate_api_requests": replicate.counts["requests"] - replicate_before,
            "replicate_downloads": len(replicate.output_requests) - downloads_before,
            "discord_requests": len(discord.requests) - discord_before,
            "failed": failed,
            "unfinished": unfinished,
            "late_callbacks": late,
            "callbacks": len(callbacks_ms),
        }
        routes: dict[str, int] = {}
        for record in discord.requests[discord_before:]:
            key = f"{record.method} {_route(record.path)}"
            routes[key] = routes.get(key, 0) + 1
        received = Counter(topology.process_of_shard(h.shard_id or 0) for h in handles)
        for index, process in enumerate(metered["processes"]):
            process["label"] = topology.process_label(index)
            process["generations"] = received[index]
        peak_running = replicate.peak_running_predictions
    return {
        "baseline_ms": baseline_ms,
        "samples": samples,
        "counts": counts,
        "discord_routes": routes,
        "errors": dict(errors.most_common()),
        "wall_s": wall,
        **metered,
        "emulator_cpu_s": emu_cpu,
        "cap": cap,
        "requests": n,
        "peak_running": peak_running,
        "window_s": finished - started,
        "exit_code": stack.exit_code,
        "phase_cpu_s": phase_cpu,
    }


_BARE_CLIENT = """
import asyncio, sys, time
import aiohttp

async def main(url, n):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def one():
            async with http.post(url, json={"type": 5}) as response:
                await response.read()
        print(time.monotonic(), flush=True)
        await asyncio.gather(*(one() for _ in range(n)))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def transport_baseline(n: int) -> list[float]:
    """The floor under the first-callback figure: ``n`` POSTs sent at once over fresh
    connections by a bare aiohttp client in another process (as discord.py sends the
    callbacks) to a bare aiohttp server in this one, in ms from the start of the burst to
    each request's arrival in its handler."""
    arrivals: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        arrivals.append(time.monotonic())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/callback", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _BARE_CLIENT,
            f"http://127.0.0.1:{port}/callback",
            str(n),
            stdout=asyncio.subprocess.PIPE,
        )
        assert client.stdout is not None
        start = float((await client.stdout.readline()).decode())
        await client.wait()
    finally:
        await runner.cleanup()
    return [(t - start) * 1000.0 for t in arrivals]


def _route(path: str) -> str:
    parts = [
        ("{id}" if p.isdigit() else ("{token}" if len(p) > 40 else p)) for p in path.split("/")
    ]
    return "/".join(parts)


def figures_of(args: argparse.Namespace, result: dict[str, Any]) -> list[Figure]:
    n = args.requests
    cb = result["samples"]["first_callback_ms"]
    oh = result["samples"]["overhead_ms"]
    cr = result["samples"].get("create_ms", [])
    counts = result["counts"]
    done = n - counts["failed"]
    return [
        Figure("requests", n),
        Figure("generations posted", done, target=f"= {n}", ok=done == n),
        Figure(
            "callbacks later than 3 s",
            counts["late_callbacks"],
            target="= 0",
            ok=counts["late_callbacks"] == 0,
        ),
        Figure(
            f"baseline: {n} bare POSTs at once, p99",
            percentile(result["baseline_ms"], 99),
            "ms",
        ),
        Figure("first callback p50", percentile(cb, 50), "ms"),
        Figure("first callback p95", percentile(cb, 95), "ms"),
        below("first callback p99", percentile(cb, 99), 100, "ms"),
        below("first callback max", max(cb) if cb else None, DEADLINE_S * 1000, "ms"),
        Figure("sent -> prediction created p50", percentile(cr, 50), "ms"),
        Figure("sent -> prediction created p99", percentile(cr, 99), "ms"),
        Figure("overhead over L p50", percentile(oh, 50), "ms"),
        below("overhead over L p99", percentile(oh, 99), 250, "ms"),
        Figure("overhead over L max", max(oh) if oh else None, "ms"),
        at_most("wall time / L", result["wall_s"] / args.latency, 1.25),
        *timeline_figures(result),
        *shared_figures(result, n),
        Figure("Discord requests / generation", counts["discord_requests"] / n),
    ]


TIMELINE = {
    "sent": "interactions sent",
    "answered": "interactions answered",
    "created": "predictions created",
    "finished": "predictions finished",
    "posted": "images posted",
}
"""The steps of a job, as the timeline figures name them."""


def timeline_figures(result: dict[str, Any]) -> list[Figure]:
    """When the first and the last job reached each step, from the first interaction
    sent, and the bots' CPU in the two bursts: where the wall time went (runs saved
    before these figures have none)."""
    figures = []
    for step, label in TIMELINE.items():
        times = result["samples"].get(f"{step}_after_first_sent_ms")
        if times:
            figures.append(Figure(f"{label}, first (after the first sent)", min(times), "ms"))
            figures.append(Figure(f"{label}, last", max(times), "ms"))
    phases = result.get("phase_cpu_s") or {}
    for phase, label in (
        ("intake", "first sent .. last created"),
        ("completion", "first finished .. last posted"),
    ):
        for who, key in (("bot", phase), ("emulators'", f"{phase}_emulators")):
            cpu = phases.get(key)
            if cpu is not None:
                figures.append(
                    Figure(
                        f"{who} CPU / generation, {label}", 1000 * cpu / result["requests"], "ms"
                    )
                )
    return figures


def shared_figures(result: dict[str, Any], n: int) -> list[Figure]:
    """What both front ends report the same way: Replicate's side, CPU and memory."""
    counts = result["counts"]
    several = len(result.get("processes", ())) > 1
    bots = "bots' (all processes)" if several else "bot"
    figures = [
        Figure("Replicate API requests / generation", counts["replicate_api_requests"] / n),
        Figure("Replicate downloads / generation", counts["replicate_downloads"] / n),
        at_most("predictions running at once, most", result.get("peak_running"), result["cap"]),
        Figure(
            "emulators' CPU use in the run",
            100 * result["emulator_cpu_s"] / result["window_s"],
            "% of a core",
        ),
        Figure(
            f"{bots} CPU use in the run",
            None if result["cpu_s"] is None else 100 * result["cpu_s"] / result["window_s"],
            "% of a core",
        ),
        below(
            "bot peak RSS" + (" (largest process)" if several else ""),
            result["peak_rss_mb"],
            200,
            "MB",
        ),
        Figure(
            f"{bots} CPU / generation",
            None if result["cpu_s"] is None else result["cpu_s"] / n * 1000,
            "ms",
        ),
    ]
    if result.get("db_cpu_s") is not None:
        figures.append(Figure("PostgreSQL CPU / generation", result["db_cpu_s"] / n * 1000, "ms"))
    return figures


def first_answer_p99(result: dict[str, Any], n: int) -> float | None:
    """p99 of the first answer over all ``n`` interactions: one Discord refused (past the
    3 s deadline) or never got counts as infinitely late, so that a bot that drops
    interactions cannot look faster for it."""
    answered = result["samples"]["first_callback_ms"]
    return percentile([*answered, *[math.inf] * (n - len(answered))], 99)


def ratios_of(
    args: argparse.Namespace, project: dict[str, Any], peer: dict[str, Any]
) -> list[Ratio]:
    """The figures the comparison with the peer quotes, project beside peer."""
    n = args.requests

    def row(name: str, unit: str, value: Any) -> Ratio:
        return Ratio(name, value(project), value(peer), unit)

    def per_generation(key: str) -> Any:
        return lambda r: r["counts"][key] / n

    return [
        row("generations completed", "", lambda r: n - r["counts"]["failed"]),
        row("generations failed", "", lambda r: r["counts"]["failed"]),
        row("  of them unanswered at --timeout", "", lambda r: r["counts"]["unfinished"]),
        row("callbacks later than 3 s", "", lambda r: r["counts"]["late_callbacks"]),
        row("first answer p99", "ms", lambda r: first_answer_p99(r, n)),
        row("overhead over L p99", "ms", lambda r: percentile(r["samples"]["overhead_ms"], 99)),
        row("wall time / L", "", lambda r: r["wall_s"] / args.latency),
        row(
            "CPU / generation",
            "ms",
            lambda r: None if r["cpu_s"] is None else r["cpu_s"] / n * 1000,
        ),
        row("peak RSS", "MB", lambda r: r["peak_rss_mb"]),
        row("Replicate API requests / generation", "", per_generation("replicate_api_requests")),
        row("Replicate downloads / generation", "", per_generation("replicate_downloads")),
        row("Discord requests / generation", "", per_generation("discord_requests")),
    ]
