"""/usage and GET /usage: the figures are Replicate's reported predict_time and the price
table's, summed; the chart is a PNG of the last 30 days."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from PIL import Image

from services.costs import load_prices, month_bounds
from tests.emulators.discord import DiscordEmulator, Message, Perm, User
from tests.emulators.replicate import Job, ReplicateEmulator
from tests.harness import BotHarness
from tests.helpers import zips
from tests.helpers.store import recent_generations
from tests.test_http_api import ApiServer

PRICES = load_prices()
H100 = PRICES.hardware_per_second["gpu-h100"]
SCHNELL_IMAGE = PRICES.models["black-forest-labs/flux-schnell"].per_image
assert SCHNELL_IMAGE is not None


def reported(job: Job, base_url: str) -> float:
    """The ``metrics.predict_time`` the emulator reports for a finished job."""
    return float(job.to_json(base_url)["metrics"]["predict_time"])


def chart_size(data: bytes) -> tuple[int, int]:
    """The PNG's size; every pixel is opaque, so it reads the same on any theme."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        alpha = image.getchannel("A") if image.mode == "RGBA" else None
        assert alpha is None or alpha.getextrema() == (255, 255)
        return image.size


async def usage_reply(emu: DiscordEmulator, user: User) -> Message:
    handle = await emu.slash("usage", user=user)
    callback = await handle.first_response(timeout=3)
    assert callback.type == 5 and callback.data["flags"] & 64, "defers privately"
    return await handle.wait_original(lambda m: bool(m.attachments), timeout=20)


def fields(embed: dict) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed["fields"]}


async def test_usage_figures_are_the_reported_predict_time_and_the_price_table(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(TRAINING_POLL_SECONDS="0.05", TRAINING_STATUS_EDIT_SECONDS="0")
    replicate_emu.predict_time = 1.25
    member = discord_emu.add_user("member")
    model = replicate_emu.add_model(replicate_emu.username, "pet", with_version=True)
    await harness.services.store.upsert_model(
        replicate_emu.username,
        "pet",
        guild_id=discord_emu.guild.id,
        creator_key=f"discord:{member.id}",
        trigger_word="PET",
        latest_version=next(iter(model.versions)),
    )
    for options in ({"count": 2}, {"model": f"{replicate_emu.username}/pet"}):
        handle = await discord_emu.slash(
            "generate", user=member, options={"prompt": "a cat", **options}
        )
        await handle.wait_original(lambda m: bool(m.attachments), timeout=10)
    train = await discord_emu.slash(
        "train",
        user=member,
        options={"trigger_word": "TOK", "model_name": "usage-test", "steps": 100},
        attachments={"images": ("p.zip", zips.valid_training_zip(tmp_path / "p.zip").read_bytes())},
    )
    await train.wait_original(lambda m: "started" in m.content, timeout=15)
    await discord_emu.wait_for_message(
        discord_emu.channel, lambda m: "is ready" in m.content, timeout=15
    )

    base = replicate_emu.base_url
    schnell, trained = list(replicate_emu.predictions.values())
    [training] = replicate_emu.trainings.values()
    gpu = reported(schnell, base) + reported(trained, base) + reported(training, base)
    cost = 2 * SCHNELL_IMAGE + (reported(trained, base) + reported(training, base)) * H100
    assert gpu == pytest.approx(3 * 1.25)

    report = await harness.services.usage.for_user(f"discord:{member.id}")
    for totals in (report.today, report.month, report.last_30_days):
        assert (totals.generations, totals.images, totals.trainings) == (2, 3, 1)
        assert totals.gpu_seconds == pytest.approx(gpu, abs=1e-3)
        assert totals.cost_usd == pytest.approx(cost, abs=1e-6)
    assert report.days[-1] == (datetime.now(UTC).date(), report.today)
    assert len(report.days) == 30 and report.days[0][0] == date.fromordinal(
        datetime.now(UTC).date().toordinal() - 29
    )

    message = await usage_reply(discord_emu, member)
    [embed] = message.embeds
    assert embed["title"] == "Your usage"
    today = fields(embed)["Today"]
    assert "2 generations (3 images) · 1 training" in today
    assert f"{gpu:,.1f} GPU s" in today and "~$0.0098" in today
    assert embed["image"]["url"] == "attachment://usage-you.png"
    assert "estimates" in embed["footer"]["text"]
    [(name, data)] = message.attachments
    assert name == "usage-you.png" and chart_size(data) == (1200, 600)


async def test_admins_also_get_the_server_and_its_top_users(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    admin = discord_emu.add_user("admin", permissions=Perm.MANAGE_GUILD)
    heavy, light = discord_emu.add_user("heavy"), discord_emu.add_user("light")
    elsewhere = discord_emu.add_guild("Elsewhere")
    stranger = discord_emu.add_user("stranger", guild=elsewhere)
    for user, count, channel in (
        (heavy, 4, None),
        (heavy, 1, None),
        (light, 1, None),
        (stranger, 4, elsewhere.system_channel),
    ):
        handle = await discord_emu.slash(
            "generate", user=user, channel=channel, options={"prompt": "x", "count": count}
        )
        await handle.wait_original(lambda m, n=count: len(m.attachments) == n, timeout=10)

    mine = await usage_reply(discord_emu, light)
    assert len(mine.embeds) == 1 and len(mine.attachments) == 1
    assert "server" not in str(mine.embeds)

    message = await usage_reply(discord_emu, admin)
    yours, server = message.embeds
    assert yours["title"] == "Your usage" and "0 generations" in fields(yours)["Today"]
    assert server["title"] == "This server's usage"
    assert fields(server)["Today"].startswith("3 generations (6 images) · 0 trainings")
    top = fields(server)["Top users this month"].splitlines()
    assert top[0].startswith(f"1. <@{heavy.id}>: 2 generations") and "~$0.015" in top[0]
    assert top[1].startswith(f"2. <@{light.id}>: 1 generation,") and "~$0.003" in top[1]
    assert len(top) == 2, "another server's users are not this server's"
    assert {name for name, _ in message.attachments} == {"usage-you.png", "usage-server.png"}
    assert all(chart_size(data) == (1200, 600) for _, data in message.attachments)
    report = await running.services.usage.for_guild(discord_emu.guild.id)
    assert (report.month.generations, report.month.images) == (3, 6)
    assert report.month.cost_usd == pytest.approx(6 * SCHNELL_IMAGE)


async def test_get_usage_is_per_api_key(replicate_emu: ReplicateEmulator, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    replicate_emu.predict_time = 0.5
    server = ApiServer(replicate_emu, tmp_path)
    try:
        api = await server.start()
        _, first = await server.services.api_keys.create("first")
        _, second = await server.services.api_keys.create("second", budget_usd=3)
        for token in (first, first, second):
            body = {"prompt": "a fox"}
            assert (
                await api.call("POST", "/image/generate", token=token, json_body=body)
            ).status == 200
        usage = (await api.call("GET", "/usage", token=first)).json()
        assert usage["key"] == "first" and usage["estimated"] is True
        expected = {
            "generations": 2,
            "images": 2,
            "trainings": 0,
            "gpu_seconds": 1.0,
            "cost_usd": pytest.approx(2 * SCHNELL_IMAGE),
        }
        for period in ("today", "month", "last_30_days"):
            assert usage[period] == expected
        assert len(usage["days"]) == 30
        assert usage["days"][-1] == {"date": datetime.now(UTC).date().isoformat(), **expected}
        assert usage["budget"] is None
        other = (await api.call("GET", "/usage", token=second)).json()
        assert other["today"]["generations"] == 1
        resets = month_bounds(datetime.now(UTC))[1]
        assert other["budget"] == {
            "limit_usd": 3.0,
            "spent_usd": pytest.approx(SCHNELL_IMAGE),
            "resets_at": resets.isoformat().replace("+00:00", "Z"),
        }
        default = (await api.call("GET", "/usage")).json()
        assert default["key"] == "default" and default["today"]["generations"] == 0
        assert (await api.call("GET", "/usage", token="rib_nope")).status == 401
    finally:
        await server.stop()


async def test_a_prediction_that_ran_and_failed_costs_its_time(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """Replicate bills the hardware time of a failed prediction; a per-image model that
    made no image bills nothing."""
    replicate_emu.predict_time = 2.0
    member = discord_emu.add_user("member")
    model = replicate_emu.add_model(replicate_emu.username, "pet", with_version=True)
    await running.services.store.upsert_model(
        replicate_emu.username,
        "pet",
        guild_id=discord_emu.guild.id,
        creator_key=f"discord:{member.id}",
        trigger_word="PET",
        latest_version=next(iter(model.versions)),
    )
    for options in ({"model": f"{replicate_emu.username}/pet"}, {}):
        replicate_emu.fail_next_prediction("CUDA out of memory")
        handle = await discord_emu.slash(
            "generate", user=member, options={"prompt": "x", **options}
        )
        await handle.wait_original(lambda m: m.content.startswith("❌"), timeout=10)
    schnell, trained = await recent_generations(running.services.store, limit=2)
    assert (trained.status, trained.predict_time) == ("failed", 2.0)
    assert trained.cost_usd == pytest.approx(2.0 * H100)
    assert (schnell.predict_time, schnell.cost_usd) == (2.0, 0.0)
    report = await running.services.usage.for_user(f"discord:{member.id}")
    assert (report.today.generations, report.today.gpu_seconds) == (0, 4.0)
    assert report.today.cost_usd == pytest.approx(2.0 * H100)
