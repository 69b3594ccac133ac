"""Load benchmark: N concurrent /generate against ``python bot.py`` and both emulators.

``python -m benchmarks.load [-n 200] [--users 50] [--latency 2.0] [--chart docs/latency.png]``
``python -m benchmarks.load --peer``: the same, then the same again against the naive bot
of ``benchmarks/peer_bot.py``; one table of both and their ratios.

N interactions from ``--users`` users are sent at once (``--ramp`` spreads them over some
seconds instead); every emulated prediction takes ``--latency`` seconds. Measured:

- first-callback latency: INTERACTION_CREATE sent on the gateway -> the bot's first
  callback received by the Discord emulator (Discord's hard limit is 3 s);
- overhead: the prediction finished on Replicate -> the message with the images received
  by Discord (polling, download, fitting, upload);
- wall time / L: first interaction sent -> last images posted, over the model latency,
  with ``MAX_CONCURRENT_GENERATIONS`` = N so that nothing waits in the bot's queue;
- requests per generation to Replicate (API and output downloads) and to Discord;
- the bot process's peak resident memory (``VmHWM``) and CPU time.

With ``--peer`` each bot gets fresh emulators with the same settings, the same N, users,
latency and random seed; a generation that has neither its images nor an error message
when ``--timeout`` runs out counts as failed (``unfinished``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import time
from collections import Counter
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image, ImageDraw, ImageFont

from benchmarks.common import (
    Figure,
    Ratio,
    at_most,
    below,
    cpu_seconds,
    percentile,
    print_ratios,
    print_table,
    proc_status_kb,
    running_stack,
    write_results,
)
from tests.emulators.discord import DiscordEmulator, InteractionHandle, Message
from tests.helpers.ports import free_port

DEADLINE_S = 3.0
PEER_BOT = Path(__file__).resolve().parent / "peer_bot.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    parser.add_argument("-n", "--requests", type=int, default=200, help="concurrent /generate")
    parser.add_argument("--users", type=int, default=50, help="distinct users sending them")
    parser.add_argument(
        "-l", "--latency", type=float, default=2.0, help="emulated model latency L (s)"
    )
    parser.add_argument("--count", type=int, default=1, help="images per /generate (1-4)")
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="spread the requests over this many seconds"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="MAX_CONCURRENT_GENERATIONS (default: N, so nothing waits in the bot's queue)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after (s)")
    parser.add_argument("--validate", action="store_true", help="OpenAPI checks in emulators")
    parser.add_argument("--chart", type=Path, help="write a PNG of the latency distribution")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/)")
    parser.add_argument(
        "--from",
        dest="replot",
        type=Path,
        metavar="JSON",
        help="no run: draw --chart from the samples of an earlier run's JSON",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a bot setting"
    )
    parser.add_argument("--profile", type=Path, help="run the bot under cProfile, write here")
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="set PUBLIC_URL (and HTTP_PORT) so that predictions report their end by webhook",
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="then run the naive bot of benchmarks/peer_bot.py the same way and compare",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the emulators' randomness")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.users < 1 or not 1 <= args.count <= 4:
        parser.error("need -n >= 1, --users >= 1 and --count in 1..4")
    return args


def images_of(handle: InteractionHandle, count: int) -> Message | None:
    message = handle.original
    if message is not None and len(message.attachments) == count:
        return message
    return None


def posted_at(message: Message) -> datetime:
    """When the version of the message that first carried the images reached Discord."""
    return next(v.at for v in message.history if v.attachment_records)


async def fire(
    discord: DiscordEmulator, n: int, users: int, count: int, ramp: float
) -> list[InteractionHandle]:
    members = [m.user for m in discord.guild.members.values() if m.user.name.startswith("user")]
    members = members[:users]

    async def one(index: int) -> InteractionHandle:
        if ramp:
            await asyncio.sleep(ramp * index / n)
        return await discord.slash(
            "generate",
            options={"prompt": f"load test image {index}", "count": count},
            user=members[index % len(members)],
            settle=False,
        )

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def measure(args: argparse.Namespace, script: Path | None = None) -> dict[str, Any]:
    """One run against ``python bot.py`` (or ``script``, with the same environment)."""
    n = args.requests
    random.seed(args.seed)
    settings = {
        "MAX_CONCURRENT_GENERATIONS": str(args.concurrency or n),
        "MAX_QUEUED_GENERATIONS": str(max(n, 20)),
        "GENERATE_COOLDOWN_SECONDS": "0",
        **dict(item.split("=", 1) for item in args.set),
    }
    if args.webhooks:
        port = free_port()
        settings.setdefault("HTTP_PORT", str(port))
        settings.setdefault("PUBLIC_URL", f"http://127.0.0.1:{settings['HTTP_PORT']}")
    baseline_ms = await transport_baseline(n)
    async with running_stack(
        validate=args.validate,
        users=args.users,
        profile=args.profile if script is None else None,
        script=script,
        **settings,
    ) as stack:
        discord, replicate = stack.discord, stack.replicate
        replicate.prediction_latency = args.latency

        # One generation first, so that imports, pools and caches are warm.
        warm = await discord.slash("generate", options={"prompt": "warm up"})
        await warm.wait_original(lambda m: len(m.attachments) == 1, timeout=args.latency + 30)
        await discord.wait_until(lambda: discord._inflight == 0, timeout=10)

        replicate_before = replicate.counts["requests"]
        downloads_before = len(replicate.output_requests)
        discord_before = len(discord.requests)
        cpu_before = cpu_seconds(stack.pid)
        emu_cpu_before = time.process_time()

        started = time.monotonic()
        handles = await fire(discord, n, args.users, args.count, args.ramp)
        pending = set(handles)

        def all_posted() -> bool:
            for handle in list(pending):
                if images_of(handle, args.count) is not None or (
                    handle.original is not None and handle.original.content.startswith("❌")
                ):
                    pending.discard(handle)
            return not pending

        try:
            await discord.wait_until(all_posted, timeout=args.timeout)
        except TimeoutError:
            print(f"{len(pending)} of {n} generations did not finish in time", file=sys.stderr)
        finished = time.monotonic()
        unfinished = len(pending)
        with contextlib.suppress(TimeoutError):
            await discord.wait_until(lambda: discord._inflight == 0, timeout=10)
        cpu_after = cpu_seconds(stack.pid)
        emu_cpu = time.process_time() - emu_cpu_before
        peak_kb = proc_status_kb(stack.pid, "VmHWM")

        by_prompt = {job.input.get("prompt"): job for job in replicate.predictions.values()}
        callbacks_ms: list[float] = []
        overheads_ms: list[float] = []
        creates_ms: list[float] = []
        posted_times: list[float] = []
        wall_minus_monotonic = time.time() - time.monotonic()
        failed = late = 0
        errors: Counter[str] = Counter()
        for index, handle in enumerate(handles):
            if handle.callback is not None and handle.sent is not None:
                callbacks_ms.append(
                    (handle.created + handle.callback.latency - handle.sent) * 1000.0
                )
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
        # Wall time: from the first interaction sent (monotonic clock) to the last images
        # received (the emulator stamps message versions with the wall clock).
        first_sent = min(h.sent for h in handles if h.sent is not None)
        first_sent_wall = time.time() - (time.monotonic() - first_sent)
        wall = max(posted_times) - first_sent_wall if posted_times else finished - started
        samples = {
            "first_callback_ms": callbacks_ms,
            "overhead_ms": overheads_ms,
            "create_ms": creates_ms,
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
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "baseline_ms": baseline_ms,
        "samples": samples,
        "counts": counts,
        "discord_routes": routes,
        "errors": dict(errors.most_common()),
        "wall_s": wall,
        "peak_rss_mb": None if peak_kb is None else peak_kb / 1024,
        "cpu_s": cpu,
        "emulator_cpu_s": emu_cpu,
        "window_s": finished - started,
        "exit_code": stack.exit_code,
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
        Figure("Replicate API requests / generation", counts["replicate_api_requests"] / n),
        Figure("Replicate downloads / generation", counts["replicate_downloads"] / n),
        Figure("Discord requests / generation", counts["discord_requests"] / n),
        Figure(
            "emulators' CPU use in the run",
            100 * result["emulator_cpu_s"] / result["window_s"],
            "% of a core",
        ),
        Figure(
            "bot CPU use in the run",
            None if result["cpu_s"] is None else 100 * result["cpu_s"] / result["window_s"],
            "% of a core",
        ),
        below("bot peak RSS", result["peak_rss_mb"], 200, "MB"),
        Figure(
            "bot CPU / generation",
            None if result["cpu_s"] is None else result["cpu_s"] / n * 1000,
            "ms",
        ),
    ]


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


def draw_chart(path: Path, result: dict[str, Any], args: argparse.Namespace) -> None:
    """Two empirical CDFs (first callback, overhead over L) with their targets, drawn
    with Pillow so that the benchmarks need no plotting library."""
    width, height = 1200, 560
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=13)
    title = (
        f"/generate under load: {args.requests} at once from {args.users} users, "
        f"model latency L = {args.latency:g} s (bot: python bot.py, {_cpus()} CPU cores)"
    )
    draw.text((20, 12), title, fill="black", font=font)
    panels = [
        (
            "First callback latency (ms)",
            result["samples"]["first_callback_ms"],
            100.0,
            "target p99 < 100 ms",
        ),
        (
            "Overhead over L: prediction done -> images posted (ms)",
            result["samples"]["overhead_ms"],
            250.0,
            "target p99 < 250 ms",
        ),
    ]
    for index, (name, values, target, target_text) in enumerate(panels):
        left = 20 + index * (width // 2)
        _cdf_panel(
            draw,
            (left + 50, 70, left + width // 2 - 40, height - 60),
            name,
            values,
            target,
            target_text,
            font,
            small,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def _cdf_panel(
    draw: Any,
    box: tuple[int, int, int, int],
    name: str,
    values: list[float],
    target: float,
    target_text: str,
    font: Any,
    small: Any,
) -> None:
    x0, y0, x1, y1 = box
    draw.text((x0 - 40, y0 - 28), name, fill="black", font=font)
    draw.rectangle(box, outline="black")
    if not values:
        draw.text((x0 + 10, y0 + 10), "no samples", fill="black", font=small)
        return
    ordered = sorted(values)
    top = _nice_ceiling(max(ordered[-1], target) * 1.05)

    def sx(ms: float) -> float:
        return x0 + (x1 - x0) * ms / top

    def sy(fraction: float) -> float:
        return y1 - (y1 - y0) * fraction

    for tick in range(6):  # grid and labels
        ms = top * tick / 5
        draw.line([(sx(ms), y0), (sx(ms), y1)], fill=(225, 225, 225))
        anchor = "rt" if tick == 5 else "mt"
        draw.text((sx(ms), y1 + 6), f"{ms:,.0f}", fill="black", font=small, anchor=anchor)
        fraction = tick / 5
        draw.line([(x0, sy(fraction)), (x1, sy(fraction))], fill=(225, 225, 225))
        draw.text((x0 - 38, sy(fraction) - 7), f"{fraction:.0%}", fill="black", font=small)
    draw.text(
        (x0, y1 + 26),
        "x: milliseconds, y: share of requests at or below x",
        fill="gray",
        font=small,
    )
    for dash in range(int(y0), int(y1), 12):  # the target, dashed
        draw.line([(sx(target), dash), (sx(target), min(dash + 6, y1))], fill="red", width=2)
    draw.text((sx(target) + 4, y0 + 4), target_text, fill="red", font=small)
    points = [(x0, y1)]
    for rank, ms in enumerate(ordered, start=1):
        points.append((sx(ms), sy((rank - 1) / len(ordered))))
        points.append((sx(ms), sy(rank / len(ordered))))
    draw.line(points, fill=(31, 119, 180), width=3)
    for offset, pct in enumerate((50, 95, 99)):
        ms = percentile(ordered, pct)
        assert ms is not None
        draw.ellipse([sx(ms) - 4, sy(pct / 100) - 4, sx(ms) + 4, sy(pct / 100) + 4], fill="black")
        draw.text(
            (x1 - 170, y1 - 80 + 20 * offset), f"p{pct}: {ms:,.0f} ms", fill="black", font=small
        )


def _nice_ceiling(value: float) -> float:
    """The next 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def replot(args: argparse.Namespace) -> None:
    if args.chart is None:
        raise SystemExit("--from needs --chart")
    saved = json.loads(args.replot.read_text(encoding="utf-8"))
    for key in ("requests", "users", "latency"):
        setattr(args, key, saved["params"][key])
    draw_chart(args.chart, {"samples": saved["samples"]}, args)
    print(f"wrote {args.chart}")


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        replot(args)
        return 0
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = await measure(args)
    figures = figures_of(args, result)
    title = (
        f"Load: {args.requests} x /generate from {args.users} users, L = {args.latency:g} s, "
        f"ramp {args.ramp:g} s"
    )
    print_table(title, figures)
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    extra: dict[str, Any] = {
        "counts": result["counts"],
        "discord_routes": result["discord_routes"],
        "errors": result["errors"],
        "samples": result["samples"],
        "bot_exit_code": result["exit_code"],
        "load_average_1min_at_start": load_at_start,
    }
    if args.peer:
        peer = await measure(args, script=PEER_BOT)
        rows = ratios_of(args, result, peer)
        print_ratios(f"{title}: the project beside the naive peer (benchmarks/peer_bot.py)", rows)
        print(
            "  (first answer over all N, a refused or missing one counting as late; other "
            "percentiles and wall time over the generations completed; per-generation "
            "figures over the N requested)"
        )
        for text, times in list(peer["errors"].items())[:3]:
            print(f"  peer error x {times}: {text}")
        extra["peer"] = {
            "figures": {fig.name: asdict(fig) for fig in figures_of(args, peer)},
            "counts": peer["counts"],
            "discord_routes": peer["discord_routes"],
            "errors": peer["errors"],
            "samples": peer["samples"],
            "bot_exit_code": peer["exit_code"],
        }
        extra["comparison"] = [row.to_json() for row in rows]
    name = "load-peer" if args.peer else "load"
    path = write_results(name, params, figures, extra, out=args.out)
    print(f"\nwrote {path}")
    if args.chart is not None:
        draw_chart(args.chart, result, args)
        print(f"wrote {args.chart}")
    missed = [f for f in figures if f.ok is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
