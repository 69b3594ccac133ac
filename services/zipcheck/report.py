"""What a check found, and the words it is told in.

Every message here is shown verbatim to users: plain words, naming the entry it is about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.zipcheck.limits import MB, ZipLimits

NESTED_ARCHIVE = "archives inside the zip are not allowed; put the images directly in the zip."
UNSUPPORTED_COMPRESSION = (
    "uses a compression method that is not supported. Please create the zip with a standard "
    "zip tool and default settings."
)
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_MAX_LISTED_NAMES = 10
_MAX_SHOWN_NAME = 120


@dataclass
class ZipReport:
    ok: bool
    problems: list[str]
    warnings: list[str]
    image_count: int
    caption_count: int
    total_uncompressed: int
    skipped: list[str] = field(default_factory=list)

    def message(self, *, limit: int = 1900) -> str:
        """One user-facing message: every problem, then warnings, cut to ``limit`` characters.

        When not everything fits, the last line says how many items were left out.
        """
        counts = f"{plural(self.image_count, 'image')}, {plural(self.caption_count, 'caption')}"
        if self.problems:
            head = "❌ This zip can't be used for training. Please fix the following and try again:"
        else:
            head = f"✅ The zip looks good ({counts})."
        items: list[tuple[str, str | None]] = [(f"• {p}", None) for p in self.problems]
        if self.warnings:
            items += [(f"• {w}", "⚠️ Notes:") for w in self.warnings]
        return _fit_lines(head, items, limit)


class Findings:
    """What the checks found so far; :meth:`report` sums it up.

    Problems about the whole zip come first in the report, then those about entries in the
    zip's order, whatever order they were found in."""

    def __init__(self, limits: ZipLimits) -> None:
        self.limits = limits
        self.global_problems: list[str] = []
        self.entry_problems: list[tuple[int, str]] = []
        self.warnings: list[str] = []
        self.skipped: list[str] = []
        self.small_images: list[str] = []
        self.total_declared = 0
        self.image_count = 0
        self.caption_count = 0

    def entry_problem(self, index: int, name: str, text: str) -> None:
        self.entry_problems.append((index, f"{show(name)}: {text}"))

    def report(self) -> ZipReport:
        problems = self.global_problems + [p for _, p in sorted(self.entry_problems)]
        warnings = list(self.warnings)
        if self.small_images:
            n = len(self.small_images)
            side = self.limits.min_side_warning
            are = "image is" if n == 1 else "images are"
            warnings.append(
                f"{n} {are} smaller than {side} px on the short side: "
                f"{list_names(self.small_images)}. They are accepted, but training works best "
                f"with images of at least {side} px."
            )
        return ZipReport(
            ok=not problems,
            problems=problems,
            warnings=warnings,
            image_count=self.image_count,
            caption_count=self.caption_count,
            total_uncompressed=self.total_declared,
            skipped=self.skipped,
        )


def _fit_lines(head: str, items: list[tuple[str, str | None]], limit: int) -> str:
    """Join ``head`` and bullet items (each optionally under a section title) within ``limit``.

    Items that do not fit are replaced by a final "…and N more" line; a single over-long item
    is shortened rather than dropped when there is reasonable room for it.
    """
    limit = max(limit, 1)
    text = head
    section: str | None = None
    for i, (line, title) in enumerate(items):
        prefix = f"\n\n{title}" if title is not None and title != section else ""
        left_after = len(items) - i - 1
        reserve = len(f"\n…and {left_after} more") if left_after else 0
        room = limit - len(text) - len(prefix) - 1 - reserve
        if len(line) > room:
            if room < 40:
                return _hard_cut(f"{text}\n…and {len(items) - i} more", limit)
            line = line[: room - 1] + "…"
        text += f"{prefix}\n{line}"
        section = title
    return _hard_cut(text, limit)


def _hard_cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def fmt_bytes(n: float) -> str:
    """A size as people read it: ``1.5 MB``, ``12 KB``, ``3 bytes``."""
    for unit, size in (("GB", 1024 * MB), ("MB", MB), ("KB", 1024)):
        if n >= size:
            value = n / size
            return (
                f"{value:.0f} {unit}"
                if value >= 10 or value == int(value)
                else f"{value:.1f} {unit}"
            )
    return plural(int(n), "byte")


def show(name: str) -> str:
    """Render an entry name safely inside Discord inline code."""
    shown = CONTROL_RE.sub("?", name).replace("`", "'")
    if len(shown) > _MAX_SHOWN_NAME:
        half = _MAX_SHOWN_NAME // 2 - 1
        shown = f"{shown[:half]}…{shown[-half:]}"
    return f"`{shown or '(no name)'}`"


def list_names(names: list[str]) -> str:
    shown = ", ".join(show(n) for n in names[:_MAX_LISTED_NAMES])
    if len(names) > _MAX_LISTED_NAMES:
        shown += f" and {len(names) - _MAX_LISTED_NAMES} more"
    return shown
