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

``--database postgres``, ``--http-only``, ``--processes P`` and ``--shards S`` run the
same load on PostgreSQL, through the HTTP API, over several processes or shards, beside
one process on SQLite in the same invocation (see ``benchmarks/scale.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import scale
from benchmarks.chart import draw_chart
from benchmarks.common import print_ratios, print_table, run, write_results
from benchmarks.load_discord import figures_of, measure, ratios_of

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
    scaling = parser.add_argument_group("stores, processes and shards (benchmarks/scale.py)")
    scaling.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the store: a SQLite file, or a throwaway PostgreSQL server (TEST_POSTGRES_URL's "
        "if set) with a fresh database per run",
    )
    scaling.add_argument(
        "--processes", type=int, default=1, help="bot processes on one store (PostgreSQL)"
    )
    scaling.add_argument(
        "--shards", type=int, default=0, help="SHARD_COUNT, spread over the processes"
    )
    scaling.add_argument(
        "--http-only",
        action="store_true",
        help="python bot.py --http-only processes; N POST /image/generate spread over them",
    )
    scaling.add_argument(
        "--rounds", type=int, default=1, help="run every configuration this many times"
    )
    scaling.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the single-process runs (SQLite; PostgreSQL) measured beside it",
    )
    scaling.add_argument(
        "--cap",
        type=int,
        help="MAX_CONCURRENT_GENERATIONS of the cap phase (default N / 4; 0: no cap phase)",
    )
    scaling.add_argument(
        "--quota", type=int, default=10, help="daily quota of the quota phase (0: none)"
    )
    scaling.add_argument(
        "--quota-burst", type=int, default=500, help="requests at once in the quota phase"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.users < 1 or not 1 <= args.count <= 4:
        parser.error("need -n >= 1, --users >= 1 and --count in 1..4")
    try:
        target = scale.target_of(args)
    except ValueError as exc:
        parser.error(str(exc))
    if not target.plain:
        if args.peer or args.webhooks or args.profile or args.ramp:
            parser.error("--peer, --webhooks, --profile and --ramp run with one bot on SQLite")
        if args.chart and target.http_only:
            parser.error("--chart draws the first callbacks of Discord interactions")
        if args.rounds < 1 or (args.cap is not None and args.cap < 0):
            parser.error("need --rounds >= 1 and --cap >= 0")
    return args


def replot(args: argparse.Namespace) -> None:
    if args.chart is None:
        raise SystemExit("--from needs --chart")
    saved = json.loads(args.replot.read_text(encoding="utf-8"))
    for key in ("requests", "users", "latency"):
        setattr(args, key, saved["params"][key])
    samples = saved.get("samples")
    if samples is None and "runs" in saved:  # benchmarks/scale.py: the configuration asked for
        samples = scale.upper_median(saved["runs"][saved["configurations"][-1]])["samples"]
    if samples is None or "first_callback_ms" not in samples:
        raise SystemExit(f"{args.replot} holds no first callbacks of Discord interactions")
    draw_chart(args.chart, {"samples": samples}, args)
    print(f"wrote {args.chart}")


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        replot(args)
        return 0
    # SIGTERM unwinds like Ctrl-C, so that no bot or database server is left running.
    main_task = asyncio.current_task()
    assert main_task is not None
    with contextlib.suppress(NotImplementedError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    if not scale.target_of(args).plain:
        return await scale.run(args)
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
    run(main())
