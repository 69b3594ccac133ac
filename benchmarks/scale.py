"""The load benchmark on PostgreSQL, with several processes and with shards, beside one
process on SQLite measured in the same invocation.

``python -m benchmarks.load --database postgres``
``python -m benchmarks.load --http-only --processes 2 --database postgres``
``python -m benchmarks.load --shards 2 --processes 2 --database postgres``

Every invocation first runs the same load against the references: one process on SQLite
and, when the configuration asked for has several processes, one process on PostgreSQL
(the same front end: Discord, or ``--http-only``). ``--rounds R`` repeats the whole
sequence R times, alternating; each configuration is then shown by its upper-median run
by wall time, with the range of the R runs in the comparison. On a shared machine the
ratios between configurations measured minutes apart say more than the absolute times.

Then, for the configuration asked for only:

- a **cap phase**: N requests with ``MAX_CONCURRENT_GENERATIONS`` = ``--cap`` (N / 4 by
  default), spread over every process: all complete, and the Replicate emulator's
  ``peak_running_predictions`` (the most predictions created and unfinished at once)
  never exceeds the cap;
- with ``--http-only``, a **quota phase**: ``--quota-burst`` requests (500) at once with
  one API token whose daily quota is ``--quota`` (10): exactly that many are admitted.

The PostgreSQL server is a throwaway one started and deleted by the benchmark (or the one
``TEST_POSTGRES_URL`` names), with a fresh database for every run; its processes' CPU
time is counted per generation beside the bots'.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.chart import draw_chart
from benchmarks.cluster import Postgres, Topology, store_of
from benchmarks.common import Figure, at_most, percentile, print_grid, print_table, write_results
from benchmarks.load_discord import figures_of, first_answer_p99, measure
from benchmarks.load_http import http_figures, measure_http, quota_figures

Row = tuple[str, str, Callable[[dict[str, Any]], float | int | None]]


def target_of(args: argparse.Namespace) -> Topology:
    return Topology(args.database, args.processes, args.shards, args.http_only)


def references_of(target: Topology) -> list[Topology]:
    """The configurations measured beside ``target`` in the same invocation."""
    out = [Topology("sqlite", 1, 0, target.http_only)]
    if target.processes > 1 or target.shards:
        out.append(Topology("postgres", 1, 0, target.http_only))
    return [t for t in out if t != target]


async def one_run(
    args: argparse.Namespace,
    topology: Topology,
    postgres: Postgres | None,
    *,
    cap: int | None = None,
    n: int | None = None,
    per_day: int = 0,
) -> dict[str, Any]:
    """One load run of ``topology`` on a fresh store."""
    n = n or args.requests
    if topology.database != "postgres":
        postgres = None
    async with store_of(topology, postgres) as url:
        if topology.http_only:
            return await measure_http(
                args,
                topology,
                url,
                postgres,
                n=n,
                cap=cap or n,
                per_day=per_day,
                warm=not per_day,
            )
        run_args = copy.copy(args)
        run_args.concurrency = cap or args.concurrency
        return await measure(run_args, topology=topology, database_url=url, postgres=postgres)


def upper_median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def rows_of(args: argparse.Namespace, http_only: bool) -> list[Row]:
    """The figures compared between configurations."""
    n, latency = args.requests, args.latency

    def per_gen(value: Callable[[dict[str, Any]], float | None], scale: float = 1.0) -> Any:
        def get(r: dict[str, Any]) -> float | None:
            v = value(r)
            return None if v is None else v / n * scale

        return get

    def pct(key: str, p: float) -> Any:
        return lambda r: percentile(r["samples"][key], p)

    if http_only:
        answers: list[Row] = [
            ("images returned", "", lambda r: n - r["counts"]["failed"]),
            ("request -> image p50", "ms", pct("response_ms", 50)),
            ("request -> image p99", "ms", pct("response_ms", 99)),
        ]
    else:
        answers = [
            ("generations posted", "", lambda r: n - r["counts"]["failed"]),
            ("first answer p50", "ms", pct("first_callback_ms", 50)),
            ("first answer p99", "ms", lambda r: first_answer_p99(r, n)),
        ]
    return [
        *answers,
        ("sent -> prediction created p99", "ms", pct("create_ms", 99)),
        ("overhead over L p50", "ms", pct("overhead_ms", 50)),
        ("overhead over L p99", "ms", pct("overhead_ms", 99)),
        ("wall time / L", "", lambda r: r["wall_s"] / latency),
        ("bots' CPU / generation", "ms", per_gen(lambda r: r["cpu_s"], 1000)),
        ("PostgreSQL CPU / generation", "ms", per_gen(lambda r: r.get("db_cpu_s"), 1000)),
        ("peak RSS (largest process)", "MB", lambda r: r["peak_rss_mb"]),
        (
            "Replicate API requests / generation",
            "",
            per_gen(lambda r: r["counts"]["replicate_api_requests"]),
        ),
        *(
            []
            if http_only
            else [
                (
                    "Discord requests / generation",
                    "",
                    per_gen(lambda r: r["counts"]["discord_requests"]),
                )
            ]
        ),
        ("predictions running at once, most", "", lambda r: r["peak_running"]),
    ]


def shown(value: float | int | None, unit: str) -> str:
    if value is not None and math.isinf(value):
        return "late"
    return Figure("", value, unit).shown()


def comparison(
    args: argparse.Namespace,
    configs: list[Topology],
    runs: dict[Topology, list[dict[str, Any]]],
) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """The comparison table (header, rows) and its JSON: each configuration's
    upper-median run (with the range over the rounds), and ratios to the first."""
    letters = [chr(ord("A") + i) for i in range(len(configs))]
    header = [
        "figure",
        *(f"{letter}: {c.label}" for letter, c in zip(letters, configs, strict=True)),
    ]
    header += [f"{letter} / A" for letter in letters[1:]]
    lines: list[list[str]] = []
    data: list[dict[str, Any]] = []
    for name, unit, get in rows_of(args, configs[-1].http_only):
        values = [get(upper_median(runs[c])) for c in configs]
        cells = [name]
        for config, value in zip(configs, values, strict=True):
            text = shown(value, unit)
            every = [v for v in (get(r) for r in runs[config]) if v is not None]
            if len(runs[config]) > 1 and every:
                text += f" ({shown(min(every), '')} to {shown(max(every), '')})"
            cells.append(text)
        ratios: list[float | None] = []
        for value in values[1:]:
            base = values[0]
            ratio = None
            if value is not None and base:
                ratio = math.inf if math.isinf(value) else value / base
            ratios.append(ratio)
            cells.append("n/a" if ratio is None else "inf" if math.isinf(ratio) else f"{ratio:.2f}")
        lines.append(cells)
        data.append(
            {
                "name": name,
                "unit": unit,
                "values": dict(zip((c.label for c in configs), values, strict=True)),
                "ratios_to_first": ratios,
            }
        )
    return header, lines, data


def process_rows(
    configs: list[Topology], runs: dict[Topology, list[dict[str, Any]]]
) -> list[list[str]]:
    rows = []
    for config in configs:
        run = upper_median(runs[config])
        for process in run["processes"]:
            gens, cpu = process["generations"], process["cpu_s"]
            rows.append(
                [
                    config.label,
                    process["label"],
                    str(gens),
                    shown(None if cpu is None or not gens else cpu / gens * 1000, "ms"),
                    shown(None if cpu is None else 100 * cpu / run["window_s"], "% of a core"),
                    shown(process["peak_rss_mb"], "MB"),
                ]
            )
    return rows


def cap_figures(args: argparse.Namespace, result: dict[str, Any]) -> list[Figure]:
    """A burst larger than ``MAX_CONCURRENT_GENERATIONS``: all complete, never more
    running at once (through Discord or the HTTP API)."""
    n, cap = result["requests"], result["cap"]
    posted = n - result["counts"]["failed"]
    rounds = -(-n // cap)
    return [
        Figure("requests at once", n),
        Figure("MAX_CONCURRENT_GENERATIONS", cap),
        Figure("generations completed", posted, target=f"= {n}", ok=posted == n),
        at_most("predictions running at once, most", result["peak_running"], cap),
        Figure(f"wall time / ({rounds} rounds x L)", result["wall_s"] / (rounds * args.latency)),
    ]


def slug(target: Topology) -> str:
    parts = ["load", target.database]
    if target.http_only:
        parts.append("http")
    if target.shards:
        parts.append(f"shards{target.shards}")
    parts.append(f"p{target.processes}")
    return "-".join(parts)


async def run(args: argparse.Namespace) -> int:
    """The configuration of ``args`` beside its references; tables, then JSON."""
    target = target_of(args)
    configs = ([] if args.no_reference else references_of(target)) + [target]
    load_start = os.getloadavg()
    postgres = Postgres() if any(c.database == "postgres" for c in configs) else None
    runs: dict[Topology, list[dict[str, Any]]] = {c: [] for c in configs}
    cap_result = quota_result = None
    cap = args.cap if args.cap is not None else max(1, args.requests // 4)
    try:
        if postgres is not None:
            await postgres.start()
        for round_no in range(args.rounds):
            for config in configs:
                print(f"round {round_no + 1}: {config.label}", file=sys.stderr, flush=True)
                runs[config].append(await one_run(args, config, postgres))
        if cap:
            print(f"cap phase: {target.label}", file=sys.stderr, flush=True)
            cap_result = await one_run(args, target, postgres, cap=cap)
        if target.http_only and args.quota:
            print(f"quota phase: {target.label}", file=sys.stderr, flush=True)
            quota_result = await one_run(
                args, target, postgres, n=args.quota_burst, per_day=args.quota
            )
    finally:
        if postgres is not None:
            await postgres.stop()
    load_end = os.getloadavg()

    front = "POST /image/generate" if target.http_only else f"/generate from {args.users} users"
    title = f"Load: {args.requests} x {front}, L = {args.latency:g} s"
    figures_for = http_figures if target.http_only else figures_of
    rounds_note = "" if args.rounds == 1 else f" (upper median of {args.rounds} runs)"
    for config in configs:
        print_table(
            f"{title}; {config.label}{rounds_note}", figures_for(args, upper_median(runs[config]))
        )
    if any(c.processes > 1 for c in configs):
        print_grid(
            f"{title}: each process",
            ["configuration", "process", "generations", "CPU / generation", "CPU use", "peak RSS"],
            process_rows(configs, runs),
        )
    header, lines, data = comparison(args, configs, runs)
    if len(configs) > 1:
        print_grid(f"{title}: side by side{rounds_note}", header, lines)
    extra: dict[str, Any] = {
        "configurations": [c.label for c in configs],
        "comparison": data,
        "runs": {c.label: [summary(args, r) for r in runs[c]] for c in configs},
        "load_average_1min_at_start": round(load_start[0], 2),
        "load_average_1min_at_end": round(load_end[0], 2),
    }
    missed: list[Figure] = []
    if cap_result is not None:
        figures = cap_figures(args, cap_result)
        missed += [f for f in figures if f.ok is False]
        print_table(f"Cap: {args.requests} at once over {target.label}", figures)
        extra["cap_phase"] = summary(args, cap_result, figures)
    if quota_result is not None:
        figures = quota_figures(quota_result)
        missed += [f for f in figures if f.ok is False]
        print_table(
            f"Quota: {args.quota_burst} at once with one API token, {args.quota} a day, "
            f"over {target.label}",
            figures,
        )
        extra["quota_phase"] = summary(args, quota_result, figures)
    print(
        f"\nmachine: {len(os.sched_getaffinity(0))} cores; 1-minute load average "
        f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end"
    )
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    target_figures = figures_for(args, upper_median(runs[target]))
    path = write_results(slug(target), params, target_figures, extra, out=args.out)
    print(f"\nwrote {path}")
    if args.chart is not None:
        draw_chart(args.chart, upper_median(runs[target]), args)
        print(f"wrote {args.chart}")
    missed += [f for f in target_figures if f.ok is False]
    return 1 if args.strict and missed else 0


def summary(
    args: argparse.Namespace, result: dict[str, Any], figures: list[Figure] | None = None
) -> dict[str, Any]:
    """What the JSON keeps of one run."""
    if figures is None:
        figures = (http_figures if "response_ms" in result["samples"] else figures_of)(args, result)
    keep = ("counts", "samples", "processes", "wall_s", "window_s", "cap", "peak_running")
    return {
        "figures": {f.name: asdict(f) for f in figures},
        **{k: result[k] for k in keep if k in result},
        "db_cpu_s": result.get("db_cpu_s"),
        "bot_exit_code": result.get("exit_code"),
    }
