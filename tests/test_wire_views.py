"""The buttons under a job, sent as copied components, are exactly what discord.py builds
item by item (labels, styles, emoji, rows, custom ids), for every shape of result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cogs._results import build_progress_view, build_result_view, progress_view, result_view
from services.store import Generation


def _job(job_id: str, **params: Any) -> Generation:
    now = datetime.now(UTC)
    return Generation(
        id=job_id,
        user_key="discord:1",
        user_id=1,
        guild_id=2,
        channel_id=3,
        prompt="a cat",
        model="black-forest-labs/flux-schnell",
        params=params,
        status="succeeded",
        error=None,
        prediction_id="p",
        seed=1,
        created_at=now,
        started_at=now,
        finished_at=now,
        updated_at=now,
        predict_time=1.0,
        interaction_id=4,
        result_message_id=None,
        source="discord",
    )


SHAPES = [
    ({}, 1),
    ({}, 4),
    ({"kind": "generate"}, 2),
    ({"kind": "vary"}, 3),
    ({"kind": "upscale"}, 1),
    ({"kind": "upscale", "parent": "x1"}, 1),
]


@pytest.mark.parametrize(("params", "count"), SHAPES)
async def test_result_buttons_match_the_views_built_item_by_item(
    params: dict[str, Any], count: int
) -> None:
    for job_id in ("Ab3_-xYz0123", "q" * 12):
        job = _job(job_id, **params)
        wire = result_view(job, count).to_components()
        assert wire == build_result_view(job, count).to_components()
        assert all(job_id in c["custom_id"] for row in wire for c in row["components"])


async def test_copies_do_not_share_ids() -> None:
    first = result_view(_job("aaaaaaaaaaaa"), 2).to_components()
    second = result_view(_job("bbbbbbbbbbbb"), 2).to_components()
    assert first != second
    assert all("aaaaaaaaaaaa" in c["custom_id"] for row in first for c in row["components"])


async def test_progress_button_matches() -> None:
    wire = progress_view("Zz9-Zz9-Zz9_").to_components()
    assert wire == build_progress_view("Zz9-Zz9-Zz9_").to_components()
    assert not progress_view("Zz9-Zz9-Zz9_").is_dispatchable()
