"""Zip benchmark: the training-zip validator beside a plain CRC pass on the same file.

``python -m benchmarks.zips [--size-mb 200] [--repeat 3] [--stored] [--decode-pixels]``

A zip of about ``--size-mb`` MB of photos (JPEG, PNG and WebP, incompressible noise like
real photos, each with a caption) is written to a temporary folder. Each pass runs in a
fresh child process, on a file already in the page cache, alternating:

- ``validate``: ``services.zipcheck.check_zip`` with limits wide enough for the file;
- ``testzip``: ``zipfile.ZipFile.testzip()``, which inflates every entry and checks its CRC.

Reported: MB/s of each (zip bytes over the best of ``--repeat`` passes), their ratio (the
target is at least half the speed of testzip), and the peak memory growth of a pass (peak
resident set minus the resident set before it; target under 64 MB), with the peak of
Python allocations (tracemalloc) from a separate pass.

``python -m benchmarks.zips --concurrent 10`` measures the bot instead: ``python bot.py``
against the emulators, and ``--concurrent`` members sending ``/train`` at once, each with
a zip of 13 MB that truly inflates to 0.9 GB (19 PNGs of 48 MB whose bytes deflate 68:1,
under every ratio and size limit). Reported: the bot's peak resident set (target under
250 MB with the default MAX_CONCURRENT_ZIP_CHECKS=2), how many were told they wait, and
how long the last one took.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from contextlib import suppress
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.common import (
    Figure,
    at_least,
    below,
    print_table,
    proc_status_kb,
    running_stack,
    write_results,
)
from services.zipcheck import MB, ZipLimits, check_zip
from tests.helpers.zips import image_bytes

# (format, extension, share of the zip's bytes, picture size); each format's pictures are
# drawn from VARIANTS different ones.
MIX = (
    ("JPEG", ".jpg", 0.80, (1536, 1536)),
    ("PNG", ".png", 0.15, (1024, 1024)),
    ("WEBP", ".webp", 0.05, (1024, 1024)),
)
VARIANTS = 6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zips", description=__doc__)
    parser.add_argument("--size-mb", type=float, default=200.0, help="zip size to generate")
    parser.add_argument("--repeat", type=int, default=3, help="passes of each, best is kept")
    parser.add_argument("--stored", action="store_true", help="store entries (no deflate)")
    parser.add_argument(
        "--decode-pixels", action="store_true", help="also decode every image's pixels"
    )
    parser.add_argument("--zip", type=Path, help="use this zip instead of generating one")
    parser.add_argument("--tmp", type=Path, help="folder for the generated zip")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--concurrent", type=int, help="send this many inflating zips to the bot at once"
    )
    parser.add_argument(
        "--checks", type=int, help="MAX_CONCURRENT_ZIP_CHECKS of the bot (default: its own)"
    )
    parser.add_argument("--child", nargs=2, metavar=("TASK", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size_mb <= 0 or args.repeat < 1:
        parser.error("need --size-mb > 0 and --repeat >= 1")
    return args


def generate_zip(path: Path, size_mb: float, *, stored: bool, seed: int = 7) -> dict[str, Any]:
    """Write a training zip of about ``size_mb`` MB: photos in the MIX shares, captions."""
    rng = random.Random(seed)
    target = int(size_mb * MB)
    pools: list[tuple[str, float, list[bytes]]] = []
    for fmt, ext, share, size in MIX:
        pictures = [
            image_bytes(size, fmt, noise=True, seed=seed * 100 + i, quality=90)
            for i in range(VARIANTS)
        ]
        pools.append((ext, share, pictures))
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    images = 0
    per_format: dict[str, int] = {}
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for ext, share, pictures in pools:
            budget = target * share
            used = 0
            while used < budget:
                data = rng.choice(pictures)
                name = f"photos/img_{images:04d}"
                zf.writestr(f"{name}{ext}", data)
                zf.writestr(f"{name}.txt", f"a photo of TOK, number {images}")
                used += len(data)
                images += 1
                per_format[ext] = per_format.get(ext, 0) + 1
    return {
        "bytes": path.stat().st_size,
        "images": images,
        "per_format": per_format,
        "compression": "stored" if stored else "deflated",
    }


def limits_for(images: int, size: int, decode_pixels: bool) -> ZipLimits:
    return ZipLimits(
        max_zip_bytes=size + MB,
        max_images=images + 1,
        max_entries=2 * images + 10,
        max_total_uncompressed=4 * size + 64 * MB,
        decode_pixels=decode_pixels,
    )


# --------------------------------------------------------------------------- one pass


def child(task: str, path: Path, limits: ZipLimits, trace: bool) -> dict[str, Any]:
    """One pass in this (fresh) process: seconds, and memory growth."""
    rss_before = proc_status_kb_self("VmRSS")
    with suppress(OSError):  # reset the peak resident set (Linux >= 4.0) when allowed
        Path("/proc/self/clear_refs").write_text("5")
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    if task == "validate":
        report = check_zip(path, limits)
        outcome: Any = {"ok": report.ok, "images": report.image_count, "problems": report.problems}
    else:
        with zipfile.ZipFile(path) as zf:
            outcome = {"bad": zf.testzip()}
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1] if trace else None
    peak = proc_status_kb_self("VmHWM")
    growth = None if peak is None or rss_before is None else max(0, peak - rss_before)
    return {
        "task": task,
        "seconds": seconds,
        "rss_growth_kb": growth,
        "tracemalloc_peak_kb": None if traced is None else traced // 1024,
        "outcome": outcome,
    }


def proc_status_kb_self(key: str) -> int | None:
    return proc_status_kb(os.getpid(), key)


def run_child(
    task: str, path: Path, args: argparse.Namespace, *, trace: bool = False
) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.zips", "--child", task, str(path)]
    command += ["--size-mb", str(args.size_mb)]
    if args.decode_pixels:
        command.append("--decode-pixels")
    if trace:
        command.append("--trace")
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_cache(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(8 * MB):
            pass


# --------------------------------------------------------------------------- main


def measure(args: argparse.Namespace, path: Path, info: dict[str, Any]) -> dict[str, Any]:
    warm_cache(path)
    passes: dict[str, list[dict[str, Any]]] = {"validate": [], "testzip": []}
    for _ in range(args.repeat):
        for task in ("testzip", "validate"):
            passes[task].append(run_child(task, path, args))
    traced = run_child("validate", path, args, trace=True)
    return {"passes": passes, "traced": traced, "zip": info}


def figures_of(result: dict[str, Any]) -> list[Figure]:
    size_mb = result["zip"]["bytes"] / MB
    best = {task: min(p["seconds"] for p in runs) for task, runs in result["passes"].items()}
    speed = {task: size_mb / seconds for task, seconds in best.items()}
    growth = max((p["rss_growth_kb"] or 0) for p in result["passes"]["validate"])
    testzip_growth = max((p["rss_growth_kb"] or 0) for p in result["passes"]["testzip"])
    outcome = result["passes"]["validate"][0]["outcome"]
    return [
        Figure("zip size", size_mb, "MB"),
        Figure("images", result["zip"]["images"]),
        Figure(
            "validator accepted the zip",
            int(bool(outcome["ok"])),
            target="= 1",
            ok=bool(outcome["ok"]),
        ),
        Figure("validator speed", speed["validate"], "MB/s"),
        Figure("testzip speed", speed["testzip"], "MB/s"),
        at_least("validator / testzip speed", speed["validate"] / speed["testzip"], 0.5),
        below("validator peak memory growth", growth / 1024, 64, "MB"),
        Figure("testzip peak memory growth", testzip_growth / 1024, "MB"),
        Figure(
            "validator peak Python allocations",
            (result["traced"]["tracemalloc_peak_kb"] or 0) / 1024,
            "MB",
        ),
    ]


# --------------------------------------------------------------------------- many at once


def inflating_zip(path: Path, entries: int = 19, side: int = 4000) -> dict[str, Any]:
    """A zip whose PNGs are stored uncompressed inside (zlib level 0) over flat pixels
    with a little noise: 48 MB each, deflated about 68:1 by the zip."""
    rng = random.Random(3)
    row_bytes = side * 3
    rows = bytearray(row_bytes * side)
    for _ in range(len(rows) // 300):
        rows[rng.randrange(len(rows))] = rng.randrange(256)
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), bytes(rows)).save(buf, "PNG", compress_level=0)
    png = buf.getvalue()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for index in range(entries):
            zf.writestr(f"photo-{index:02d}.png", png)
    return {"bytes": path.stat().st_size, "unpacked": len(png) * entries, "images": entries}


async def concurrent(args: argparse.Namespace, data: bytes, info: dict[str, Any]) -> dict[str, Any]:
    """``args.concurrent`` members send ``/train`` with the zip at once; the bot's peak
    resident set once every one of them got its answer."""
    settings = {"MAX_ACTIVE_TRAININGS_PER_GUILD": "100", "TRAINING_POLL_SECONDS": "3600"}
    if args.checks:
        settings["MAX_CONCURRENT_ZIP_CHECKS"] = str(args.checks)
    async with running_stack(**settings) as stack:
        stack.replicate.training_mode = "manual"
        members = [stack.discord.add_user(f"trainer{i}") for i in range(args.concurrent)]
        ready_kb = proc_status_kb(stack.pid, "VmRSS")
        began = time.perf_counter()
        samples: list[tuple[float, int | None]] = []

        async def sample() -> None:
            while True:
                samples.append((time.perf_counter() - began, proc_status_kb(stack.pid, "VmRSS")))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        handles = await asyncio.gather(
            *(
                stack.discord.slash(
                    "train",
                    user=member,
                    options={"trigger_word": "TOK", "model_name": f"bench-{i}", "steps": 100},
                    attachments={"images": ("photos.zip", data)},
                )
                for i, member in enumerate(members)
            )
        )

        def answered(message: Any) -> bool:
            return "started" in message.content or "❌" in message.content

        answers = await asyncio.gather(
            *(handle.wait_original(answered, timeout=600) for handle in handles)
        )
        took = time.perf_counter() - began
        sampler.cancel()
        peak_kb = proc_status_kb(stack.pid, "VmHWM")
        told = sum(
            any("ahead of yours" in version.content for version in handle.original_history)
            for handle in handles
        )
    return {
        "zip": info,
        "concurrent": args.concurrent,
        "checks": args.checks,
        "ready_rss_kb": ready_kb,
        "peak_rss_kb": peak_kb,
        "started": sum("started" in answer.content for answer in answers),
        "told_to_wait": told,
        "seconds": took,
        "rss_samples": samples,
    }


def concurrent_figures(result: dict[str, Any]) -> list[Figure]:
    peak = (result["peak_rss_kb"] or 0) / 1024
    return [
        Figure("zip size", result["zip"]["bytes"] / MB, "MB"),
        Figure("unpacked size", result["zip"].get("unpacked", 0) / MB, "MB"),
        Figure("zips sent at once", result["concurrent"]),
        Figure("bot resident set when ready", (result["ready_rss_kb"] or 0) / 1024, "MB"),
        below("bot peak resident set", peak, 250, "MB"),
        Figure(
            "trainings started",
            result["started"],
            target=f"= {result['concurrent']}",
            ok=result["started"] == result["concurrent"],
        ),
        Figure("told they wait (N ahead)", result["told_to_wait"]),
        Figure("until the last answer", result["seconds"], "s"),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.concurrent:
        with tempfile.TemporaryDirectory(prefix="bench-zips-", dir=args.tmp) as tmp:
            path = args.zip or Path(tmp) / "inflating.zip"
            info = inflating_zip(path) if args.zip is None else {"bytes": path.stat().st_size}
            result = asyncio.run(concurrent(args, path.read_bytes(), info))
        figures = concurrent_figures(result)
        print_table(f"{args.concurrent} inflating zips sent to the bot at once", figures)
        params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        path_out = write_results("zips-concurrent", params, figures, result, out=args.out)
        print(f"\nwrote {path_out}")
        return 1 if args.strict and any(f.ok is False for f in figures) else 0
    if args.child:
        task, raw = args.child
        path = Path(raw)
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        images = sum(1 for n in names if not n.endswith(".txt"))
        limits = limits_for(images, path.stat().st_size, args.decode_pixels)
        print(json.dumps(child(task, path, limits, args.trace)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-zips-", dir=args.tmp) as tmp:
        if args.zip is not None:
            path = args.zip
            info = {"bytes": path.stat().st_size, "images": None, "compression": "given"}
            with zipfile.ZipFile(path) as zf:
                info["images"] = sum(1 for n in zf.namelist() if not n.endswith(".txt"))
        else:
            path = Path(tmp) / "photos.zip"
            began = time.perf_counter()
            info = generate_zip(path, args.size_mb, stored=args.stored)
            info["generated_in_s"] = time.perf_counter() - began
        result = measure(args, path, info)
    figures = figures_of(result)
    mode = "decode pixels" if args.decode_pixels else "structural checks"
    print_table(
        f"Zip: {result['zip']['bytes'] / MB:.0f} MB, {result['zip']['compression']}, "
        f"{mode}, best of {args.repeat}",
        figures,
    )
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    path_out = write_results("zips", params, figures, result, out=args.out)
    print(f"\nwrote {path_out}")
    return 1 if args.strict and any(f.ok is False for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
