"""Which way imports go: the front ends (``bot.py`` and ``cogs/`` for Discord, ``api/``
for HTTP) build on ``services/``, never the other way round, and neither front end
reaches into the other. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DISCORD = ("discord", "cogs", "bot")
WEB_SERVER = ("aiohttp.web", "api")
FORBIDDEN = {
    "services": (*DISCORD, *WEB_SERVER),
    "api": DISCORD,
    "cogs": WEB_SERVER,
}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every absolute module name ``path`` imports, ``from x import y`` giving both ``x``
    and ``x.y`` (``y`` may be a submodule, as in ``from aiohttp import web``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def matches(module: str, prefix: str) -> bool:
    """``aiohttp.web`` also covers its private modules (``aiohttp.web_protocol``...)."""
    if prefix == "aiohttp.web":
        return module.startswith("aiohttp.web")
    return module == prefix or module.startswith(prefix + ".")


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for lineno, module in imported_modules(path):
            for prefix in FORBIDDEN[package]:
                if matches(module, prefix):
                    found.append(f"{path.relative_to(ROOT)}:{lineno} imports {module}")
    return sorted(set(found))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert violations(package) == []


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text(
        "import discord.ext.commands\n"
        "from aiohttp import web\n"
        "from aiohttp.web_protocol import RequestPayloadError\n"
        "from cogs._common import Refused\n"
        "import api.server\n"
        "from bot import ImageBot\n"
        "import aiohttp\n",
        encoding="utf-8",
    )
    modules = [name for _, name in imported_modules(module)]
    forbidden = FORBIDDEN["services"]
    hits = {
        line for line, name in imported_modules(module) if any(matches(name, p) for p in forbidden)
    }
    assert hits == {1, 2, 3, 4, 5, 6}, modules
