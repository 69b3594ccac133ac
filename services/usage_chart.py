"""The usage chart: jobs per day (bars) and estimated cost per day (line) over 30 days.

Drawn with matplotlib's Agg backend, without pyplot (whose global state is not safe in
threads). The chart has its own opaque dark background and light text, so it reads the
same in Discord's dark and light themes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Final

from services.costs import usd

if TYPE_CHECKING:
    from services.usage import Totals

WIDTH_PX: Final = 1200
HEIGHT_PX: Final = 600
DPI: Final = 100

BACKGROUND: Final = "#1f2329"
PANEL: Final = "#2a2f37"
TEXT: Final = "#e8eaed"
MUTED: Final = "#a5acb8"
GRID: Final = "#3c434e"
GENERATIONS: Final = "#5865f2"
TRAININGS: Final = "#3ba55d"
COST: Final = "#f0b232"


def render_chart(days: Sequence[tuple[date, Totals]], title: str) -> bytes:
    """A PNG of ``WIDTH_PX`` x ``HEIGHT_PX`` pixels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, facecolor=BACKGROUND)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.07, 0.16, 0.85, 0.7), facecolor=PANEL)
    positions = list(range(len(days)))
    generations = [t.generations for _, t in days]
    trainings = [t.trainings for _, t in days]
    costs = [t.cost_usd for _, t in days]

    axes.bar(positions, generations, width=0.7, color=GENERATIONS, label="generations", zorder=2)
    axes.bar(
        positions,
        trainings,
        width=0.7,
        bottom=generations,
        color=TRAININGS,
        label="trainings",
        zorder=2,
    )
    axes.set_ylabel("jobs per day", color=TEXT, fontsize=12)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    top = max((g + t for g, t in zip(generations, trainings, strict=True)), default=0)
    axes.set_ylim(0, max(4, top * 1.15))
    axes.grid(axis="y", color=GRID, linewidth=0.8, zorder=0)

    money = axes.twinx()
    money.plot(
        positions,
        costs,
        color=COST,
        linewidth=2.5,
        marker="o",
        markersize=4,
        label="estimated cost",
        zorder=3,
    )
    money.set_ylim(0, max(0.01, max(costs, default=0) * 1.2))
    money.set_ylabel("estimated cost per day (USD)", color=TEXT, fontsize=12)
    money.yaxis.set_major_formatter(FuncFormatter(_dollars))
    money.yaxis.set_major_locator(MaxNLocator(nbins=6))

    labels = [d.strftime("%b %d").replace(" 0", " ") for d, _ in days]
    step = 3
    axes.set_xticks(positions[::-1][::step][::-1])
    axes.set_xticklabels(labels[::-1][::step][::-1])
    axes.set_xlim(-0.6, len(days) - 0.4)
    for ax in (axes, money):
        ax.tick_params(colors=MUTED, labelsize=11)
        for spine in ax.spines.values():
            spine.set_color(GRID)

    totals = (
        f"{_counted(sum(generations), 'generation')} · {_counted(sum(trainings), 'training')}"
        f" · ~{usd(sum(costs))} estimated"
    )
    figure.text(0.07, 0.93, title, color=TEXT, fontsize=17, fontweight="bold")
    figure.text(0.07, 0.885, f"last {len(days)} days (UTC): {totals}", color=MUTED, fontsize=12)
    handles = axes.get_legend_handles_labels()[0] + money.get_legend_handles_labels()[0]
    legend = figure.legend(
        handles=handles,
        loc="lower center",
        ncol=3,
        frameon=False,
        fontsize=11,
        bbox_to_anchor=(0.5, 0.0),
    )
    for text in legend.get_texts():
        text.set_color(TEXT)

    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI, facecolor=BACKGROUND)
    return out.getvalue()


def _counted(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _dollars(value: float, _position: int) -> str:
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if value >= 0.1 else f"${value:.3f}"
