"""What every benchmark shares: the emulators and the real bot, figures, tables, JSON.

The bot always runs as ``python bot.py`` in a subprocess (as in production, and so that its
memory and CPU time can be read from ``/proc``); both emulators run in the benchmark's own
event loop on 127.0.0.1. OpenAPI validation of the emulators' traffic is off by default:
it costs the emulators milliseconds per exchange, which would be counted against the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import trustme
import uvloop

from services.settings import Settings
from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import ROOT, BotProcess, bot_env

PROGRESS_AFTER = f"{Settings.model_fields['progress_after_seconds'].default:g}"

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One measured figure, with its target when the issue sets one."""

    name: str
    value: float | int | None
    unit: str = ""
    target: str | None = None
    ok: bool | None = None

    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        if isinstance(self.value, float):
            text = f"{self.value:,.3f}" if abs(self.value) < 10 else f"{self.value:,.1f}"
        else:
            text = f"{self.value:,}"
        return f"{text} {self.unit}".strip()


def below(name: str, value: float | None, limit: float, unit: str = "") -> Figure:
    """A figure whose target is ``value < limit``."""
    ok = None if value is None else value < limit
    return Figure(name, value, unit, f"< {limit:g} {unit}".strip(), ok)


def at_most(name: str, value: float | None, limit: float, unit: str = "") -> Figure:
    ok = None if value is None else value <= limit
    return Figure(name, value, unit, f"<= {limit:g} {unit}".strip(), ok)


def at_least(name: str, value: float | None, limit: float, unit: str = "") -> Figure:
    ok = None if value is None else value >= limit
    return Figure(name, value, unit, f">= {limit:g} {unit}".strip(), ok)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (``pct`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct * len(ordered) / 100)))
    return ordered[rank - 1]


def print_table(title: str, figures: Iterable[Figure]) -> None:
    rows = [("figure", "value", "target", "")]
    for fig in figures:
        mark = {True: "ok", False: "MISSED", None: ""}[fig.ok]
        rows.append((fig.name, fig.shown(), fig.target or "", mark))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"\n{title}")
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


@dataclass
class Ratio:
    """One figure of two bots measured in the same run, and their ratio."""

    name: str
    project: float | int | None
    peer: float | int | None
    unit: str = ""

    @property
    def ratio(self) -> float | None:
        """project / peer; None when it means nothing (no value, 0 / 0, late / late)."""
        if self.project is None or self.peer is None or not self.peer:
            return None
        if math.isinf(self.project):
            return None if math.isinf(self.peer) else math.inf
        return self.project / self.peer

    def shown(self, value: float | int | None) -> str:
        if value is not None and math.isinf(value):
            return "late"
        return Figure("", value, self.unit).shown()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: an infinitely late value (or ratio) is written as ``"late"``."""

        def plain(value: float | int | None) -> float | int | str | None:
            return "late" if value is not None and math.isinf(value) else value

        return {
            "name": self.name,
            "unit": self.unit,
            "project": plain(self.project),
            "peer": plain(self.peer),
            "ratio": plain(self.ratio),
        }


def print_ratios(title: str, rows: Iterable[Ratio]) -> None:
    """A table of project, peer and project / peer."""
    table = [("figure", "project", "peer", "project / peer")]
    for row in rows:
        ratio = row.ratio
        shown = "n/a" if ratio is None else "inf" if math.isinf(ratio) else f"{ratio:.2f}"
        table.append((row.name, row.shown(row.project), row.shown(row.peer), shown))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    print(f"\n{title}")
    for index, line in enumerate(table):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def print_grid(title: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A plain table: a header, then one line per row, columns padded to their widest."""
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print(f"\n{title}")
    for index, line in enumerate(table):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def write_results(
    name: str,
    params: dict[str, Any],
    figures: Sequence[Figure],
    extra: dict[str, Any] | None = None,
    out: Path | None = None,
) -> Path:
    """``benchmarks/results/<name>.json`` (or ``out``): parameters, machine, figures."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": params,
        "machine": machine(),
        "figures": {fig.name: asdict(fig) for fig in figures},
        **(extra or {}),
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def machine() -> dict[str, Any]:
    """The machine a run was made on, as PERFORMANCE.md describes it."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_mb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": usable,
        "cpu_model": model or platform.processor(),
        "memory_mb": mem_mb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1min_at_end": None if load is None else round(load[0], 2),
    }


# --------------------------------------------------------------------------- /proc


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` field in kB (``VmHWM`` is the peak resident set)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    return None


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Both emulators and the bot subprocesses that talk to them."""

    discord: DiscordEmulator
    replicate: ReplicateEmulator
    bots: list[BotProcess]
    workdir: Path
    #: Each bot's environment, in the order of ``bots``.
    envs: list[dict[str, str]] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bot(self) -> BotProcess:
        return self.bots[0]

    @property
    def pid(self) -> int:
        return self.pids[0]

    @property
    def pids(self) -> list[int]:
        pids = []
        for bot in self.bots:
            assert bot.proc is not None
            pids.append(bot.proc.pid)
        return pids

    @property
    def exit_code(self) -> int | None:
        return self.exit_codes[0] if self.exit_codes else None

    @property
    def http_ports(self) -> list[int]:
        """The ``HTTP_PORT`` of each bot that has one."""
        return [int(env["HTTP_PORT"]) for env in self.envs if env.get("HTTP_PORT")]


class ScriptBotProcess(BotProcess):
    """``python [-m cProfile -o <path>] <script> [args]``: ``bot.py`` or another bot (the
    load benchmark's peer). With a profile, it is written when the process exits."""

    def __init__(
        self,
        env: dict[str, str],
        cwd: Path,
        script: Path,
        profile: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(env, cwd, args)
        self.script = script
        self.profile = None if profile is None else profile.resolve()

    async def start(self) -> None:
        profiling = () if self.profile is None else ("-m", "cProfile", "-o", str(self.profile))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *profiling,
            str(self.script),
            *self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())


@contextlib.asynccontextmanager
async def running_stack(
    *,
    validate: bool = False,
    users: int = 0,
    ready_timeout: float = 30.0,
    profile: Path | None = None,
    script: Path | None = None,
    processes: Sequence[Mapping[str, str]] = ({},),
    bot_args: tuple[str, ...] = (),
    prepare: Callable[[DiscordEmulator], None] | None = None,
    **settings: str,
) -> AsyncIterator[Stack]:
    """Start the emulators and ``python bot.py`` (settings as environment variables);
    stop the bot with SIGTERM on the way out (SIGKILL if it does not exit in time).

    ``processes`` starts one bot per item, each with the settings plus the item's own
    (``SHARD_IDS``, ``HTTP_PORT``); ``bot_args`` are their command line (``--http-only``:
    ready when every ``HTTP_PORT`` answers, else when every shard is ready on the
    gateway). ``prepare`` builds the Discord world (guilds, shards) before they start.
    With ``profile``, the first bot runs under cProfile and writes its profile there.
    With ``script``, that file runs instead of ``bot.py``, with the same environment."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        ca = trustme.CA()
        ca_file = workdir / "replicate-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        discord = DiscordEmulator(validate=validate)
        replicate = ReplicateEmulator(ca)
        replicate.checker.enabled = validate
        await discord.start()
        await replicate.start()
        try:
            for index in range(users):
                discord.add_user(f"user{index}")
            if prepare is not None:
                prepare(discord)
            stack = Stack(discord, replicate, [], workdir)
            for index, own in enumerate(processes):
                # The tests' quicker progress edits are not the bot's: its default here.
                defaults = {"LOG_LEVEL": "WARNING", "PROGRESS_AFTER_SECONDS": PROGRESS_AFTER}
                env = bot_env(discord, replicate, workdir, **{**defaults, **settings, **own})
                env["SSL_CERT_FILE"] = str(ca_file)
                stack.envs.append(env)
                stack.bots.append(
                    ScriptBotProcess(
                        env,
                        workdir,
                        script or ROOT / "bot.py",
                        profile if index == 0 else None,
                        bot_args,
                    )
                )
            try:
                await asyncio.gather(*(bot.start() for bot in stack.bots))
                try:
                    if "--http-only" in bot_args:
                        await asyncio.gather(
                            *(wait_http(port, ready_timeout) for port in stack.http_ports)
                        )
                    else:
                        await discord.wait_ready(timeout=ready_timeout)
                except TimeoutError:
                    for bot in stack.bots:
                        print(f"bot not ready; its log:\n{bot.output[-3000:]}", file=sys.stderr)
                    raise
                yield stack
            finally:
                stack.exit_codes = list(await asyncio.gather(*(stop_bot(b) for b in stack.bots)))
        finally:
            await replicate.close()
            await discord.close()


async def wait_http(port: int, timeout: float) -> None:  # noqa: ASYNC109
    """Until ``GET /ping`` on 127.0.0.1:``port`` answers 200."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/ping") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)


async def stop_bot(bot: BotProcess, timeout: float = 20.0) -> int | None:  # noqa: ASYNC109
    if bot.proc is None:
        return None
    if bot.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            bot.signal(signal.SIGTERM)
        try:
            return await bot.wait(timeout=timeout)
        except TimeoutError:
            print("the bot did not stop within the timeout; killing it", file=sys.stderr)
    await bot.kill()
    return bot.proc.returncode


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def run(main: Any) -> None:
    """Run ``main`` on uvloop, as the bot runs, and exit with its code (0 when every
    target was met, else 1). The emulators share this loop: they stand in for services
    with far more capacity than one Python process, and should cost as little as they
    can."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(main))
