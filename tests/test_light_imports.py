"""Modules imported for one regex or one sniffer stay light: the settings and the image
code never pull in the Replicate client, the HTTP clients or the database layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("replicate", "httpx", "aiohttp", "sqlalchemy")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "module",
    [
        "services.settings",
        "services.images",
        "services.model_refs",
        "services.sniff",
        "services.model_inputs",
        "services.input_images",
    ],
)
def test_importing_does_not_load_heavy_packages(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "inner = sorted(m for m in sys.modules if m.startswith(('services.replicate', "
        "'services.zipcheck', 'services.store')))\n"
        "print(heavy + inner)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
