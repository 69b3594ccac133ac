"""Bursts against every limit, through Discord and through the HTTP API, on every backend.

Fifty requests arrive at once; the store admits exactly what each limit allows, in one
step per request, and a refused request uses nothing up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.emulators.discord import DiscordEmulator, InteractionHandle
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotHarness
from tests.helpers.zips import valid_training_zip
from tests.test_http_api import Answer, Api, ApiServer
from tests.test_train import start_training

pytestmark = pytest.mark.backends

BURST = 50


async def finish_every_prediction(replicate_emu: ReplicateEmulator, expected: int) -> None:
    """Complete predictions as they are created, until ``expected`` have been."""
    done = 0
    while done < expected:
        await replicate_emu.wait_for(
            lambda: any(not p.finished for p in replicate_emu.predictions.values()), timeout=10
        )
        for prediction in [p for p in replicate_emu.predictions.values() if not p.finished]:
            await replicate_emu.complete_prediction(prediction.id)
            done += 1


async def generate_burst(api: Api, n: int = BURST) -> list[Answer]:
    return list(await asyncio.gather(*(api.generate(prompt=f"p{i}") for i in range(n))))


# --------------------------------------------------------------------------- HTTP API


def assert_exactly(answers: list[Answer], started: int) -> None:
    """``started`` trainings began (201); every other request was refused by the limit
    (429) or told to come back when fewer zips are being handled at once (503), and
    each refusal says when to try again."""
    statuses = [a.status for a in answers]
    assert statuses.count(201) == started, statuses
    assert set(statuses) <= {201, 429, 503} and 429 in statuses, statuses
    assert all(int(a.headers["Retry-After"]) > 0 for a in answers if a.status != 201)


async def test_http_burst_against_the_daily_quota(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(GENERATIONS_PER_USER_PER_DAY="10", MAX_QUEUED_GENERATIONS="100")
    answers = await generate_burst(api)
    assert sorted(a.status for a in answers) == [200] * 10 + [429] * 40, [
        a.detail for a in answers if a.status not in (200, 429)
    ]
    refusal = next(a for a in answers if a.status == 429)
    assert "10 generations for today" in refusal.detail and int(refusal.headers["Retry-After"]) > 0
    assert replicate_emu.counts["predictions_created"] == 10


async def test_http_burst_against_the_cooldown(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(GENERATE_COOLDOWN_SECONDS="60")
    answers = await generate_burst(api)
    assert sorted(a.status for a in answers) == [200] + [429] * 49
    assert replicate_emu.counts["predictions_created"] == 1


async def test_http_burst_against_the_queue_and_the_global_cap(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    """4 run, 20 wait, 26 are told the bot is busy; never more than 4 predictions run."""
    replicate_emu.prediction_mode = "manual"
    api = await server.start(MAX_CONCURRENT_GENERATIONS="4", MAX_QUEUED_GENERATIONS="20")
    burst = asyncio.gather(*(api.generate(prompt=f"p{i}") for i in range(BURST)))
    await finish_every_prediction(replicate_emu, 24)
    answers = await burst
    assert sorted(a.status for a in answers) == [200] * 24 + [429] * 26
    assert replicate_emu.peak_running_predictions == 4


async def test_http_burst_against_the_training_quota(
    server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    """Two trainings used today, a quota of 3: of 50 at once exactly one more starts."""
    api = await server.start(TRAININGS_PER_USER_PER_DAY="3", MAX_ACTIVE_TRAININGS_PER_GUILD="50")
    valid_training_zip(tmp_path / "train" / "photos.zip", n=3)

    async def train(i: int) -> Answer:
        return await api.train_file(
            file_name="photos.zip", new_model_name=f"model-{i}", trigger_word="TOK"
        )

    for i in range(2):
        assert (await train(100 + i)).status == 201
    answers = await asyncio.gather(*(train(i) for i in range(BURST)))
    assert_exactly(answers, 1)
    assert replicate_emu.counts["trainings_created"] == 3


async def test_http_burst_against_running_trainings(
    server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    replicate_emu.training_mode = "manual"
    api = await server.start(MAX_ACTIVE_TRAININGS_PER_GUILD="2", TRAININGS_PER_USER_PER_DAY="0")
    valid_training_zip(tmp_path / "train" / "photos.zip", n=3)
    answers = await asyncio.gather(
        *(
            api.train_file(file_name="photos.zip", new_model_name=f"m-{i}", trigger_word="TOK")
            for i in range(BURST)
        )
    )
    assert_exactly(answers, 2)
    assert replicate_emu.counts["trainings_created"] == 2


# --------------------------------------------------------------------------- Discord


async def slash_burst(discord_emu: DiscordEmulator, users: int = 1) -> list[InteractionHandle]:
    # What is counted here is what is admitted, not how fast: with the emulators and the
    # bot in one test process on a busy machine, 50 answers can take longer than
    # Discord's 3 s (the load benchmark measures the bot's speed, in its own process).
    discord_emu.callback_deadline = None
    people = [discord_emu.add_user(f"user{i}") for i in range(users)]
    handles = await asyncio.gather(
        *(
            discord_emu.slash("generate", options={"prompt": f"p{i}"}, user=people[i % users])
            for i in range(BURST)
        )
    )
    await asyncio.gather(*(h.first_response(timeout=10) for h in handles))
    return list(handles)


def admitted(handles: list[InteractionHandle]) -> list[InteractionHandle]:
    """The interactions answered by a public defer (the rest got a private refusal)."""
    out = []
    for handle in handles:
        callback = handle.callback
        assert callback is not None
        if callback.type == 5:
            out.append(handle)
        else:
            assert callback.type == 4 and callback.data["flags"] & 64, callback
    return out


async def test_discord_burst_against_the_daily_quota(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    await harness.start(GENERATIONS_PER_USER_PER_DAY="10", MAX_QUEUED_GENERATIONS="100")
    handles = await slash_burst(discord_emu)
    assert len(admitted(handles)) == 10
    [refused, *_] = [h.callback for h in handles if h.callback and h.callback.type == 4]
    assert "10 generations for today" in refused.data["content"]
    for handle in admitted(handles):
        await handle.wait_original(lambda m: len(m.attachments) == 1, timeout=15)
    assert replicate_emu.counts["predictions_created"] == 10


async def test_discord_burst_against_the_cooldown(
    harness: BotHarness, discord_emu: DiscordEmulator
) -> None:
    await harness.start(GENERATE_COOLDOWN_SECONDS="60")
    handles = await slash_burst(discord_emu)
    assert len(admitted(handles)) == 1


async def test_discord_burst_against_the_queue(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.prediction_mode = "manual"
    await harness.start(MAX_CONCURRENT_GENERATIONS="4", MAX_QUEUED_GENERATIONS="20")
    handles = await slash_burst(discord_emu, users=BURST)
    assert len(admitted(handles)) == 24
    [busy, *_] = [h.callback for h in handles if h.callback and h.callback.type == 4]
    assert "busy" in busy.data["content"]
    await finish_every_prediction(replicate_emu, 24)
    assert replicate_emu.peak_running_predictions == 4


async def test_discord_trainings_at_once_against_the_quota(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    await harness.start(TRAININGS_PER_USER_PER_DAY="2", MAX_ACTIVE_TRAININGS_PER_GUILD="20")
    alice = discord_emu.add_user("alice")
    handles = await asyncio.gather(
        *(start_training(discord_emu, tmp_path, user=alice, model_name=f"m{i}") for i in range(8))
    )
    replies = await asyncio.gather(
        *(
            h.wait_original(lambda m: "started" in m.content or "today" in m.content, timeout=20)
            for h in handles
        )
    )
    started = [r for r in replies if "started" in r.content]
    assert len(started) == 2, [r.content for r in replies]
    assert all("2 trainings for today" in r.content for r in replies if r not in started)
    assert replicate_emu.counts["trainings_created"] == 2
