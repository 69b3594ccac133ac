"""Monthly budgets: a server's and an API key's. A budget reached refuses new jobs (saying
when it resets) in the same step that would admit them, tells the server's admins once,
and never stops a job that runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.budgets import Budgets, reset_text
from services.costs import month_bounds
from services.store import Generation, NewGeneration, NewTraining, Store, Training, open_store
from services.store.jobs import AdmitRequest, GenerationLimits, Refusal
from services.store.trainings import TrainingLimits
from services.store.usage import Budget
from services.tasks import running_tasks
from tests.emulators.discord import DiscordEmulator, Perm, User
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness
from tests.helpers import zips
from tests.helpers.databases import BACKENDS, fresh_database
from tests.test_http_api import Api, ApiServer

LEASE = timedelta(seconds=30)
GUILD = 42


@pytest.fixture(params=BACKENDS)
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    async with fresh_database(request.param, tmp_path) as url:
        first, second = await open_store(url), await open_store(url)
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


def budget(limit: float, now: datetime, scope: str = str(GUILD)) -> Budget:
    since, until = month_bounds(now)
    return Budget("guild", scope, limit, since, until)


async def admit(store: Store, limits: GenerationLimits, user: int, cost: float) -> object:
    now = datetime.now(UTC)
    job = NewGeneration(
        user_key=f"discord:{user}", prompt="p", model="m/n", guild_id=GUILD, cost_reserved=cost
    )
    [result] = await store.admit_generations([AdmitRequest(job, limits, "p", now, now + LEASE)])
    return result


async def test_a_burst_cannot_spend_past_a_budget(two_stores: tuple[Store, Store]) -> None:
    """Jobs count at their estimate while they wait or run: a burst from two processes
    stops where the budget is reached, not after the jobs end."""
    now = datetime.now(UTC)
    limits = GenerationLimits(max_running=1000, max_queued=1000, budgets=(budget(0.01, now),))
    results = await asyncio.gather(*(admit(two_stores[i % 2], limits, i, 0.003) for i in range(40)))
    admitted = [r for r in results if isinstance(r, Generation)]
    refused = [r for r in results if isinstance(r, Refusal)]
    # 0, 0.003, 0.006 and 0.009 are below the budget: four jobs, then it is reached.
    assert len(admitted) == 4 and len(refused) == 36
    assert {r.reason for r in refused} == {"budget"}
    until = month_bounds(now)[1]
    assert all(abs(r.retry_after - (until - now).total_seconds()) < 60 for r in refused)
    # A job that ends counts at its cost: a cheaper end frees room for one more job.
    first = admitted[0]
    ended = await two_stores[0].finish_generation(
        first.id, "failed", finished_at=now, from_status=("queued",), cost_usd=0.0
    )
    assert ended is not None
    assert abs(await two_stores[1].month_spend(budget(0.01, now)) - 0.009) < 1e-9
    assert isinstance(await admit(two_stores[1], limits, 99, 0.003), Generation)
    assert isinstance(await admit(two_stores[0], limits, 100, 0.003), Refusal)


async def test_generations_and_trainings_share_a_budget(two_stores: tuple[Store, Store]) -> None:
    now = datetime.now(UTC)
    spent = budget(1.0, now)
    limits = GenerationLimits(max_running=1000, max_queued=1000, budgets=(spent,))

    async def train(store: Store, user: int) -> Training | Refusal:
        t = datetime.now(UTC)
        return await store.admit_training(
            NewTraining(
                user_key=f"discord:{user}",
                model_owner="o",
                model_name=f"m{user}",
                trigger_word="TOK",
                steps=1000,
                guild_id=GUILD,
                cost_reserved=0.4,
            ),
            TrainingLimits(per_guild=100, budgets=(spent,)),
            "p",
            t,
            t + LEASE,
        )

    results = await asyncio.gather(
        *(train(two_stores[i % 2], i) for i in range(6)),
        *(admit(two_stores[i % 2], limits, 100 + i, 0.1) for i in range(10)),
    )
    kept = [r for r in results if not isinstance(r, Refusal)]
    reserved = sum(r.cost_reserved or 0 for r in kept)  # type: ignore[union-attr]
    # Each job was admitted below the budget: at most one job's estimate past it.
    assert 1.0 <= reserved < 1.0 + 0.4
    assert abs(await two_stores[0].month_spend(spent) - reserved) < 1e-9
    # Another server's budget and last month's jobs do not count.
    assert await two_stores[0].month_spend(budget(1.0, now, scope="7")) == 0.0
    next_month = month_bounds(now)[1] + timedelta(hours=1)
    assert await two_stores[0].month_spend(budget(1.0, next_month)) == 0.0


@pytest.fixture
async def admin(discord_emu: DiscordEmulator) -> User:
    return discord_emu.add_user("admin", permissions=Perm.MANAGE_GUILD)


async def set_setting(emu: DiscordEmulator, admin: User, name: str, value: str) -> str:
    handle = await emu.slash("settings set", user=admin, options={"setting": name, "value": value})
    return str((await handle.first_response(timeout=3)).data["content"])


async def test_a_server_budget_reached_refuses_the_next_job_and_tells_the_admins_once(
    running: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    admin: User,
    tmp_path: Path,
) -> None:
    alerts = discord_emu.add_channel("alerts")
    member = discord_emu.add_user("member")
    assert "$0.01 per month" in await set_setting(discord_emu, admin, "budget", "0.01")
    await set_setting(discord_emu, admin, "budget_channel", f"<#{alerts.id}>")
    # Four images of flux-schnell, $0.003 each: admitted below the budget, $0.012 spent.
    first = await discord_emu.slash("generate", user=member, options={"prompt": "a", "count": 4})
    await first.wait_original(lambda m: len(m.attachments) == 4, timeout=10)
    notice = await discord_emu.wait_for_message(alerts, timeout=5)
    _, resets = month_bounds(datetime.now(UTC))
    assert "used its monthly budget" in notice.content and "$0.012 of $0.01" in notice.content
    assert reset_text(resets) in notice.content
    assert not notice.pinged_users() and not notice.pinged_everyone()

    for prompt in ("b", "c"):
        handle = await discord_emu.slash("generate", user=member, options={"prompt": prompt})
        callback = await handle.first_response(timeout=3)
        assert callback.data["flags"] & 64
        text = callback.data["content"]
        assert "This server has used its monthly budget of $0.01" in text
        assert f"refused until {reset_text(resets)}" in text
    handle = await discord_emu.slash(
        "train",
        user=member,
        options={"trigger_word": "TOK", "model_name": "budget"},
        attachments={"images": ("p.zip", zips.valid_training_zip(tmp_path / "p.zip").read_bytes())},
    )
    assert "monthly budget" in (await handle.first_response(timeout=3)).data["content"]
    assert replicate_emu.counts["predictions_created"] == 1
    assert replicate_emu.counts["files_created"] == replicate_emu.counts["trainings_created"] == 0
    # Told once: the month's notice is claimed, and nothing else was posted.
    period = f"{month_bounds(datetime.now(UTC))[0]:%Y-%m}"
    store = running.services.store
    assert not await store.claim_budget_notice(f"guild:{discord_emu.guild.id}", period, resets)
    assert len(discord_emu.messages(alerts)) == 1
    # Raised by an admin: jobs are admitted again at once.
    await set_setting(discord_emu, admin, "budget", "5")
    again = await discord_emu.slash("generate", user=member, options={"prompt": "d"})
    await again.wait_original(lambda m: len(m.attachments) == 1, timeout=10)


async def test_a_running_job_is_never_cut_off_by_the_budget(
    running: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    admin: User,
) -> None:
    replicate_emu.prediction_mode = "manual"
    member = discord_emu.add_user("member")
    handle = await discord_emu.slash("generate", user=member, options={"prompt": "a"})
    await handle.wait_original(lambda m: "Generating" in m.content, timeout=5)
    await set_setting(discord_emu, admin, "budget", "0.01")
    await set_setting(discord_emu, admin, "budget", "0.01")  # unchanged: not on record
    refused = await discord_emu.slash("generate", user=member, options={"prompt": "b", "count": 4})
    # The running job's estimate ($0.003) counts; $0.012 more would not fit, but the
    # budget is only reached once the spend is at it: this one is admitted.
    await refused.first_response(timeout=3)
    prediction = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
    await replicate_emu.complete_prediction(prediction.id)
    await handle.wait_original(lambda m: len(m.attachments) == 1, timeout=10)
    changes = await running.services.guild_settings.history(discord_emu.guild.id)
    assert [c.new_value for c in changes] == [0.01]
    # The system channel hears of it when no channel was chosen.
    second = await replicate_emu.wait_for(
        lambda: len(replicate_emu.predictions) == 2 and replicate_emu.last_prediction
    )
    await replicate_emu.complete_prediction(second.id)
    await refused.wait_original(lambda m: len(m.attachments) == 4, timeout=10)
    notice = await discord_emu.wait_for_message(
        discord_emu.channel, lambda m: "monthly budget" in m.content, timeout=5
    )
    assert "$0.015 of $0.01" in notice.content


async def test_an_api_key_budget(
    replicate_emu: ReplicateEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "train").mkdir()
    server = ApiServer(replicate_emu, tmp_path)
    try:
        api: Api = await server.start()
        _, key = await server.services.api_keys.create("small", budget_usd=0.005)
        assert (
            await api.call("POST", "/image/generate", token=key, json_body={"prompt": "a"})
        ).status == 200
        assert (
            await api.call("POST", "/image/generate", token=key, json_body={"prompt": "b"})
        ).status == 200
        answer = await api.call("POST", "/image/generate", token=key, json_body={"prompt": "c"})
        assert answer.status == 429
        _, resets = month_bounds(datetime.now(UTC))
        assert "This API key has used its monthly budget of $0.005" in answer.detail
        assert reset_text(resets) in answer.detail
        assert int(answer.headers["Retry-After"]) > 0
        # The owner's own key (API_TOKEN) has no budget.
        assert (await api.generate(prompt="d")).status == 200
        usage = (await api.call("GET", "/usage", token=key)).json()
        assert usage["budget"]["limit_usd"] == 0.005
        assert usage["budget"]["spent_usd"] == pytest.approx(0.006)
        assert usage["month"]["cost_usd"] == pytest.approx(0.006)
    finally:
        await server.stop()
    assert [r for r in caplog.records if "used its monthly budget" in r.getMessage()]


class _HeldChecks(Budgets):
    """Budgets whose checks of a server's spending are counted and held until released."""

    def __init__(self) -> None:
        super().__init__(store=None, guild_settings=None)  # type: ignore[arg-type]
        self.checks = 0
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def _check_guild(self, guild_id: int) -> None:
        self.checks += 1
        self.started.set()
        await self.release.wait()


async def test_job_ends_during_a_budget_check_share_one_more_check() -> None:
    """Every job end is followed by a check of its server's spending that starts after
    it; the ends of a burst that come while a check runs share the next one."""
    budgets = _HeldChecks()
    budgets.job_ended(GUILD, 0.003)
    await asyncio.wait_for(budgets.started.wait(), 5)
    for _ in range(100):
        budgets.job_ended(GUILD, 0.003)
    budgets.job_ended(GUILD + 1, 0.003)  # another server: its own check
    budgets.job_ended(GUILD, 0.0)  # nothing spent: nothing to check
    budgets.release.set()
    checking = [t for t in running_tasks() if t.get_name().startswith("budget-check-")]
    assert len(checking) == 2
    await asyncio.wait_for(asyncio.gather(*checking), 5)
    assert budgets.checks == 3
