"""Training benchmark: M trainings tracked at once, by polling and by webhooks.

``python -m benchmarks.training [-m 100] [--poll 2] [--window 20] [--mode polling|webhook|both]``

M trainings are started through /train (one zip, M model names) against ``python bot.py``
and the emulators, with the trainer in manual mode. For ``--window`` seconds every
training makes progress (its step advances every ``--advance`` seconds; in webhook mode
each step is a signed ``logs`` delivery), then they complete, spread over one poll
interval. Measured:

- Replicate requests per training per minute during the window: at most one poll per
  ``TRAINING_POLL_SECONDS`` while polling, none for trainings whose webhooks are fresh;
- time from completion on Replicate to the notice in the channel;
- Discord requests per training per minute (status message edits), the bot's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Figure,
    Stack,
    at_most,
    cpu_seconds,
    percentile,
    print_table,
    proc_status_kb,
    running_stack,
    write_results,
)
from tests.emulators.discord import InteractionHandle, Message
from tests.helpers.ports import free_port
from tests.helpers.zips import Entry, caption_entry, image_bytes, zip_bytes

TRAINING_GET = re.compile(r"/v1/trainings/[^/]+")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__)
    parser.add_argument("-m", "--trainings", type=int, default=100, help="trainings at once")
    parser.add_argument("--poll", type=float, default=2.0, help="TRAINING_POLL_SECONDS (default 2)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of progress")
    parser.add_argument(
        "--advance", type=float, default=0.0, help="step every (s); default poll / 2"
    )
    parser.add_argument("--mode", choices=("polling", "webhook", "both"), default="both")
    parser.add_argument("--parallel-starts", type=int, default=10, help="/train at a time")
    parser.add_argument("--validate", action="store_true", help="OpenAPI checks in emulators")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.trainings < 1 or args.poll <= 0 or args.window <= 0:
        parser.error("need -m >= 1, --poll > 0 and --window > 0")
    args.advance = args.advance or args.poll / 2
    return args


def is_notice(message: Message) -> bool:
    return message.webhook_id is None and not message.embeds and "<@" in message.content


def training_gets(stack: Stack) -> dict[str, int]:
    """GET /v1/trainings/{id} so far, per training id."""
    counts: dict[str, int] = {}
    for method, path, _ in stack.replicate.requests:
        if method == "GET" and TRAINING_GET.fullmatch(path):
            job_id = path.rsplit("/", 1)[1]
            counts[job_id] = counts.get(job_id, 0) + 1
    return counts


def training_zip(images: int = 3) -> bytes:
    """A small zip that passes the checks: JPEG photos with captions."""
    entries = []
    for index in range(images):
        entries.append(Entry(f"img_{index}.jpg", image_bytes((512, 512), seed=index + 1)))
        entries.append(caption_entry(f"img_{index}.txt", f"a photo of TOK, #{index}"))
    return zip_bytes(entries)


async def start_trainings(stack: Stack, m: int, parallel: int, data: bytes) -> float:
    """Run /train M times (``parallel`` at a time); seconds until all were started."""
    discord = stack.discord
    attachment = discord.create_attachment("photos.zip", data)
    gate = asyncio.Semaphore(parallel)
    began = time.monotonic()

    async def one(index: int) -> InteractionHandle:
        async with gate:
            handle = await discord.slash(
                "train",
                options={"trigger_word": "TOK", "model_name": f"bench-{index}", "steps": 1000},
                attachments={"images": attachment},
            )
            await handle.wait_original(lambda m: "started" in m.content, timeout=60)
            return handle

    await asyncio.gather(*(one(i) for i in range(m)))
    return time.monotonic() - began


async def measure_mode(args: argparse.Namespace, mode: str, data: bytes) -> dict[str, Any]:
    m = args.trainings
    settings = {
        "TRAINING_POLL_SECONDS": f"{args.poll:g}",
        "MAX_ACTIVE_TRAININGS_PER_GUILD": str(m),
        "TRAININGS_PER_USER_PER_DAY": "0",
    }
    if mode == "webhook":
        port = free_port()
        settings |= {"PUBLIC_URL": f"http://127.0.0.1:{port}", "HTTP_PORT": str(port)}
    async with running_stack(validate=args.validate, users=1, **settings) as stack:
        replicate, discord = stack.replicate, stack.discord
        replicate.training_mode = "manual"
        start_s = await start_trainings(stack, m, args.parallel_starts, data)
        jobs = list(replicate.trainings.values())
        if mode == "webhook":  # every "start" delivery in before the window opens
            await replicate.wait_for(lambda: replicate.counts["webhooks_delivered"] >= m, 60)

        # The window: steady progress on every training.
        gets_before = training_gets(stack)
        discord_before = len(discord.requests)
        cpu_before = cpu_seconds(stack.pid)
        delivered_before = replicate.counts["webhooks_delivered"]
        opened = time.monotonic()
        step = 0
        while time.monotonic() - opened < args.window:
            step += 1
            for job in jobs:
                await replicate.advance_training(job.id, min(999, step * 5))
            await asyncio.sleep(
                max(0.0, min(args.advance * step - (time.monotonic() - opened), args.advance))
            )
        window = time.monotonic() - opened
        gets_after = training_gets(stack)
        per_training = [gets_after.get(j.id, 0) - gets_before.get(j.id, 0) for j in jobs]
        discord_in_window = len(discord.requests) - discord_before
        routes: dict[str, int] = {}
        for record in discord.requests[discord_before:]:
            key = f"{record.method} {re.sub(r'/[0-9]+', '/{id}', record.path)}"
            routes[key] = routes.get(key, 0) + 1
        cpu_window = cpu_seconds(stack.pid)
        delivered = replicate.counts["webhooks_delivered"] - delivered_before
        deliveries_backlog = replicate.webhooks_pending()

        # Completions spread evenly over one poll interval, so that their phase against
        # the bot's poll cycle is uniform (all at once would land on one phase only).
        closing = time.monotonic()
        for index, job in enumerate(jobs):
            await asyncio.sleep(max(0.0, closing + args.poll * index / m - time.monotonic()))
            await replicate.complete_training(job.id)
        try:
            await discord.wait_until(
                lambda: sum(1 for msg in discord.messages() if is_notice(msg)) >= m,
                timeout=max(60.0, 10 * args.poll),
            )
        except TimeoutError:
            print(f"{mode}: not every notice arrived in time", file=sys.stderr)
        notices = [msg for msg in discord.messages() if is_notice(msg)]
        by_model = {}
        for msg in notices:
            match = re.search(r"/(bench-\d+)\*\*", msg.content)
            if match:
                by_model.setdefault(match.group(1), []).append(msg)
        delays_ms = []
        for job in jobs:
            name = (job.destination or "").rsplit("/", 1)[-1]
            sent = by_model.get(name, [])
            if sent and job.completed_at is not None:
                delays_ms.append((sent[0].created_at - job.completed_at).total_seconds() * 1000)
        peak_kb = proc_status_kb(stack.pid, "VmHWM")
        duplicates = sum(max(0, len(v) - 1) for v in by_model.values())
    cpu = None if cpu_before is None or cpu_window is None else cpu_window - cpu_before
    return {
        "mode": mode,
        "start_s": start_s,
        "window_s": window,
        "polls_per_training": per_training,
        "discord_requests_in_window": discord_in_window,
        "discord_routes_in_window": routes,
        "webhook_backlog_at_window_end": deliveries_backlog,
        "webhooks_delivered_in_window": delivered,
        "notice_delay_ms": delays_ms,
        "notices": len(notices),
        "duplicate_notices": duplicates,
        "cpu_s": cpu,
        "peak_rss_mb": None if peak_kb is None else peak_kb / 1024,
        "exit_code": stack.exit_code,
    }


def figures_of(args: argparse.Namespace, r: dict[str, Any]) -> list[Figure]:
    m = args.trainings
    minutes = r["window_s"] / 60
    polls = r["polls_per_training"]
    rate = sum(polls) / m / minutes
    bound = 60 / args.poll
    most = max(polls) if polls else 0
    most_allowed = int(r["window_s"] / args.poll) + 1
    delays = r["notice_delay_ms"]
    mode = r["mode"]
    figures = [
        Figure(f"{mode}: trainings tracked", m),
        Figure(f"{mode}: /train started per second", m / r["start_s"], "/s"),
        Figure(f"{mode}: window", r["window_s"], "s"),
    ]
    if mode == "polling":
        figures += [
            at_most(f"{mode}: Replicate polls / training / min", rate, bound),
            at_most(f"{mode}: most polls of one training in the window", most, most_allowed),
            Figure(
                f"{mode}: bot CPU / poll",
                None if r["cpu_s"] is None or not sum(polls) else r["cpu_s"] / sum(polls) * 1000,
                "ms",
            ),
        ]
    else:
        figures += [
            at_most(f"{mode}: Replicate polls / training / min", rate, 0),
            Figure(f"{mode}: trainings polled at all in the window", sum(1 for p in polls if p)),
            Figure(
                f"{mode}: webhook deliveries / s in the window",
                r["webhooks_delivered_in_window"] / r["window_s"],
                "/s",
            ),
            Figure(
                f"{mode}: webhook deliveries queued at window end",
                r["webhook_backlog_at_window_end"],
            ),
            Figure(
                f"{mode}: bot CPU / webhook delivery",
                None
                if r["cpu_s"] is None or not r["webhooks_delivered_in_window"]
                else r["cpu_s"] / r["webhooks_delivered_in_window"] * 1000,
                "ms",
            ),
        ]
    figures += [
        Figure(
            f"{mode}: Discord requests / training / min",
            r["discord_requests_in_window"] / m / minutes,
        ),
        Figure(f"{mode}: notices", r["notices"], target=f"= {m}", ok=r["notices"] == m),
        Figure(
            f"{mode}: duplicate notices",
            r["duplicate_notices"],
            target="= 0",
            ok=r["duplicate_notices"] == 0,
        ),
        Figure(f"{mode}: completion -> notice p50", percentile(delays, 50), "ms"),
        Figure(f"{mode}: completion -> notice p99", percentile(delays, 99), "ms"),
        Figure(f"{mode}: completion -> notice max", max(delays) if delays else None, "ms"),
        Figure(
            f"{mode}: bot CPU / training / min",
            None if r["cpu_s"] is None else r["cpu_s"] / m / minutes * 1000,
            "ms",
        ),
        Figure(f"{mode}: bot peak RSS", r["peak_rss_mb"], "MB"),
    ]
    return figures


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = ["polling", "webhook"] if args.mode == "both" else [args.mode]
    data = training_zip()
    results = [await measure_mode(args, mode, data) for mode in modes]
    figures = [fig for result in results for fig in figures_of(args, result)]
    print_table(
        f"Training: {args.trainings} trainings, TRAINING_POLL_SECONDS = {args.poll:g}, "
        f"a step every {args.advance:g} s for {args.window:g} s",
        figures,
    )
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    path = write_results("training", params, figures, {"runs": results}, out=args.out)
    print(f"\nwrote {path}")
    return 1 if args.strict and any(f.ok is False for f in figures) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
