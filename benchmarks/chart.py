"""The load benchmark's latency chart: two empirical CDFs drawn with Pillow."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from benchmarks.common import percentile


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
