"""Reliability: faults of Replicate, of Discord and of the bot's own process, and bad input.

Every test drives the real bot (in-process, or ``python bot.py`` where a signal or a kill
is the point) against the emulators, injects one fault, and checks what users would see:
the images posted or a clear failure, exactly one notice per training, nothing paid for
twice. docs/RELIABILITY.md lists every case with its outcome.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import aiohttp
import pytest

from services.store import open_store
from tests.emulators.discord import DiscordEmulator, InteractionHandle, Message, User
from tests.emulators.replicate import NSFW_OFFICIAL, ReplicateEmulator
from tests.emulators.replicate.webhooks import sign_webhook
from tests.harness import BotHarness, BotProcess, bot_env
from tests.helpers import zips
from tests.helpers.quiet import wait_until_quiet
from tests.helpers.store import recent_generations, wait_for_stored_prediction_ids
from tests.test_train import (
    FAST,
    is_notice,
    is_status,
    start_in_webhook_mode,
    started_training,
)

pytestmark = pytest.mark.backends

PREDICTION = r"/v1/predictions/[^/]+"
OFFICIAL_CREATE = r"/v1/models/[^/]+/[^/]+/predictions"
ORIGINAL = r"/webhooks/\d+/[^/]+/messages/@original"
FOLLOWUP = r"/webhooks/\d+/[^/]+"


def has_images(count: int = 1) -> Callable[[Message], bool]:
    return lambda m: len(m.attachments) == count


def generating(message: Message) -> bool:
    return "Generating" in message.content


def button(message: Message, action: str) -> str:
    return next(
        c.custom_id or ""
        for c in message.components
        if (c.custom_id or "").startswith(f"gen:{action}:")
    )


async def running_prediction(
    discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator, prompt: str, **kwargs: object
) -> tuple[InteractionHandle, str]:
    """A /generate whose prediction exists on Replicate and waits (manual mode)."""
    replicate_emu.prediction_mode = "manual"
    before = len(replicate_emu.predictions)
    handle = await discord_emu.slash("generate", options={"prompt": prompt}, **kwargs)
    await handle.wait_original(generating, timeout=5)
    await replicate_emu.wait_for(lambda: len(replicate_emu.predictions) > before)
    job = next(j for j in replicate_emu.predictions.values() if j.input["prompt"] == prompt)
    return handle, job.id


# --------------------------------------------------------------------------- Replicate


async def test_replicate_429_on_create_and_on_polls_is_waited_out(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.prediction_mode = "manual"
    replicate_emu.rate_limit_next_create(retry_after=0.05, count=2)
    handle = await discord_emu.slash("generate", options={"prompt": "rate limited"})
    await handle.wait_original(generating, timeout=5)
    job = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
    replicate_emu.error_next("GET", PREDICTION, status=429, count=2)
    await replicate_emu.wait_for(lambda: replicate_emu.request_count("GET", PREDICTION) >= 3)
    await replicate_emu.complete_prediction(job.id)
    await handle.wait_original(has_images(), timeout=10)
    assert replicate_emu.counts["predictions_created"] == 1, "a refused create was paid twice"
    assert replicate_emu.request_count("POST", OFFICIAL_CREATE) == 3


async def test_replicate_5xx_on_polls_is_survived(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle, job_id = await running_prediction(discord_emu, replicate_emu, "flaky polls")
    replicate_emu.error_next("GET", PREDICTION, status=502, count=2)
    await replicate_emu.wait_for(lambda: replicate_emu.request_count("GET", PREDICTION) >= 3)
    await replicate_emu.complete_prediction(job_id)
    message = await handle.wait_original(has_images(), timeout=10)
    assert not message.content.startswith("❌")
    assert replicate_emu.counts["predictions_created"] == 1


async def test_replicate_5xx_after_the_create_went_through_is_reported_not_retried(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """The create reached Replicate but its answer was a 500: retrying could pay twice."""
    replicate_emu.error_next("POST", OFFICIAL_CREATE, status=500, process=True)
    handle = await discord_emu.slash("generate", options={"prompt": "lost answer"})
    message = await handle.wait_original(lambda m: m.content.startswith("❌"), timeout=10)
    assert "Replicate" in message.content
    assert replicate_emu.counts["predictions_created"] == 1


async def test_replicate_outage_of_a_few_seconds_loses_no_images(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """Three failed polls in a row (a few seconds of 5xx), then Replicate answers again:
    the prediction is still running and paid for, so the bot must keep following it and
    post its images."""
    handle, job_id = await running_prediction(discord_emu, replicate_emu, "short outage")
    before = replicate_emu.request_count("GET", PREDICTION)
    replicate_emu.error_next("GET", PREDICTION, status=500, count=3)
    await replicate_emu.wait_for(
        lambda: replicate_emu.request_count("GET", PREDICTION) >= before + 3, timeout=10
    )
    await replicate_emu.complete_prediction(job_id)
    message = await handle.wait_original(
        lambda m: bool(m.attachments) or m.content.startswith("❌"), timeout=10
    )
    assert message.attachments, f"a paid prediction was abandoned: {message.content!r}"


async def test_replicate_down_for_longer_than_the_outage_limit_is_reported(
    harness: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """An outage longer than REPLICATE_OUTAGE_SECONDS (1 s here, 60 s by default): the
    user is told, and the job is recorded failed."""
    await harness.start(REPLICATE_OUTAGE_SECONDS="1")
    handle, _ = await running_prediction(discord_emu, replicate_emu, "outage")
    replicate_emu.error_next("GET", PREDICTION, status=500, count=100)
    message = await handle.wait_original(lambda m: m.content.startswith("❌"), timeout=10)
    assert "Replicate" in message.content
    generation = (await recent_generations(harness.services.store, limit=1))[0]
    assert generation.status == "failed"


async def test_replicate_hang_during_a_job_blocks_nobody_else(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    alice, bob = discord_emu.add_user("alice"), discord_emu.add_user("bob")
    first, first_id = await running_prediction(discord_emu, replicate_emu, "hung", user=alice)
    replicate_emu.hang_next("GET", rf"/v1/predictions/{first_id}")
    await replicate_emu.wait_for(lambda: replicate_emu.counts["hung"] == 1)

    second = await discord_emu.slash("generate", options={"prompt": "meanwhile"}, user=bob)
    callback = await second.first_response(timeout=3)
    assert callback.type == 5
    await second.wait_original(generating, timeout=5)
    job = await replicate_emu.wait_for(
        lambda: next(
            (j for j in replicate_emu.predictions.values() if j.input["prompt"] == "meanwhile"),
            None,
        )
    )
    await replicate_emu.complete_prediction(job.id)
    await second.wait_original(has_images(), timeout=10)
    assert not first.original.attachments, "the hung job cannot be done yet"

    await replicate_emu.complete_prediction(first_id)
    replicate_emu.release_hangs()
    await first.wait_original(has_images(), timeout=10)


# --------------------------------------------------------------------------- Discord


async def test_gateway_dropped_mid_job_results_still_posted(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle, job_id = await running_prediction(discord_emu, replicate_emu, "no gateway")
    await discord_emu.drop_gateway()
    await replicate_emu.complete_prediction(job_id)
    await handle.wait_original(has_images(), timeout=10)
    await discord_emu.wait_until(lambda: discord_emu.resume_count >= 1, timeout=15)
    await discord_emu.wait_ready(timeout=10)
    replicate_emu.prediction_mode = "auto"
    after = await discord_emu.slash("generate", options={"prompt": "after the drop"})
    assert (await after.first_response(timeout=3)).type == 5
    await after.wait_original(has_images(), timeout=10)


async def test_discord_429_with_via_on_the_result_is_retried(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle, job_id = await running_prediction(discord_emu, replicate_emu, "throttled")
    rule = discord_emu.fail_next("PATCH", ORIGINAL, 429, retry_after=0.05, via=True)
    await replicate_emu.complete_prediction(job_id)
    await handle.wait_original(has_images(), timeout=10)
    assert rule.hits == 1


async def test_discord_429_with_via_on_a_followup_is_retried(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    handle, _ = await running_prediction(discord_emu, replicate_emu, "to cancel")
    message = await handle.wait_original(generating)
    rule = discord_emu.fail_next("POST", FOLLOWUP, 429, retry_after=0.05, via=True)
    press = await discord_emu.press(message, button(message, "cancel"), user=handle.user)
    reply = await press.wait_followup(lambda m: "Canceled" in m.content, timeout=10)
    assert reply.ephemeral
    assert rule.hits == 1
    await handle.wait_original(lambda m: "Canceled" in m.content, timeout=5)


async def test_discord_429_without_via_falls_back_to_a_channel_post(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    """discord.py does not retry a 429 without ``Via`` (a Cloudflare ban): the images
    must still reach the user, as a channel message that pings them."""
    handle, job_id = await running_prediction(discord_emu, replicate_emu, "banned edit")
    discord_emu.fail_next("PATCH", ORIGINAL, 429, retry_after=0.05, via=False, count=10)
    await replicate_emu.complete_prediction(job_id)
    posted = await discord_emu.wait_for_message(
        discord_emu.channel, lambda m: m.webhook_id is None and len(m.attachments) == 1, timeout=10
    )
    assert handle.user.id in posted.pinged_user_ids()


# --------------------------------------------------------------------------- the process


def outcome_of(discord_emu: DiscordEmulator, handle: InteractionHandle) -> list[str]:
    """Everything that told this generation's user how it ended: "images" or "failed"."""
    seen = []
    original = handle.original
    if original is not None and original.attachments:
        seen.append("images")
    elif original is not None and original.content.startswith(("❌", "🛑")):
        seen.append("failed")
    mention = f"<@{handle.user.id}>"
    for message in discord_emu.messages(handle.channel):
        if message.webhook_id is None and mention in message.content and not is_status(message):
            seen.append("images" if message.attachments else "failed")
    return seen


def notices_for(discord_emu: DiscordEmulator, user: User) -> list[Message]:
    return [
        m
        for m in discord_emu.messages(discord_emu.channel)
        if is_notice(m) and user.id in m.pinged_user_ids()
    ]


async def test_sigkill_with_trainings_and_generations_in_flight_then_restart(
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
    database_url: str,
) -> None:
    """5 trainings and 5 generations (4 running, 1 queued) when the bot is SIGKILLed.
    While it is down some jobs finish, one fails; the rest finish after the restart, the
    queued one included. Every training is notified exactly once; every generation is
    either posted or reported failed, once."""
    replicate_emu.training_mode = "manual"
    replicate_emu.prediction_mode = "manual"
    env = bot_env(
        discord_emu,
        replicate_emu,
        tmp_path,
        DATABASE_URL=database_url,
        MAX_ACTIVE_TRAININGS_PER_GUILD="5",
        MAX_CONCURRENT_GENERATIONS="4",
        LOG_LEVEL="INFO",
        **FAST,
    )
    trainers = [discord_emu.add_user(f"trainer{i}") for i in range(5)]
    makers = [discord_emu.add_user(f"maker{i}") for i in range(5)]
    first = BotProcess(env, cwd=tmp_path)
    await first.start()
    try:
        await discord_emu.wait_ready(timeout=15)
        for index, user in enumerate(trainers):
            await started_training(discord_emu, tmp_path, user=user, model_name=f"m{index}")
        trainings = list(replicate_emu.trainings.values())
        gens = {}
        for index, user in enumerate(makers):
            prompt = f"p{index}"
            gens[prompt] = await discord_emu.slash(
                "generate", options={"prompt": prompt}, user=user
            )

        def shown(text: str) -> list[str]:
            return [p for p, h in gens.items() if h.original and text in h.original.content]

        await discord_emu.wait_until(
            lambda: len(shown("Generating")) == 4 and len(shown("Queued")) == 1, timeout=10
        )
        await replicate_emu.wait_for(lambda: len(replicate_emu.predictions) == 4)
        # Kill once every prediction id is stored (re-checked on each of the bot's polls).
        # (A kill between a create and storing its id: see the test after this one.)
        await wait_for_stored_prediction_ids(database_url, 4, replicate_emu)
        await replicate_emu.advance_training(trainings[0].id, step=30)
    finally:
        await first.kill()
    assert first.proc is not None and first.proc.returncode == -signal.SIGKILL

    predictions = {j.input["prompt"]: j for j in replicate_emu.predictions.values()}
    [queued] = shown("Queued")
    done_early, done_early_too, refused, done_late = sorted(predictions)
    await replicate_emu.complete_training(trainings[0].id)
    await replicate_emu.complete_training(trainings[1].id)
    await replicate_emu.fail_training(trainings[2].id, "CUDA out of memory")
    await replicate_emu.complete_prediction(predictions[done_early].id)
    await replicate_emu.complete_prediction(predictions[done_early_too].id)
    await replicate_emu.fail_prediction(predictions[refused].id, NSFW_OFFICIAL)

    second = BotProcess(env, cwd=tmp_path)
    await second.start()
    try:
        await discord_emu.wait_ready(timeout=15)
        await replicate_emu.complete_training(trainings[3].id)
        await replicate_emu.complete_training(trainings[4].id)
        await replicate_emu.complete_prediction(predictions[done_late].id)
        queued_run = await replicate_emu.wait_for(
            lambda: next(
                (p for p in replicate_emu.predictions.values() if p.input["prompt"] == queued),
                None,
            ),
            timeout=15,
        )
        await replicate_emu.complete_prediction(queued_run.id)
        await discord_emu.wait_until(
            lambda: (
                all(notices_for(discord_emu, u) for u in trainers)
                and all(outcome_of(discord_emu, h) for h in gens.values())
            ),
            timeout=20,
        )
        await wait_until_quiet(discord_emu, replicate_emu, database_url, poll_seconds=0.05)
    finally:
        await second.kill()
    for user in trainers:
        assert len(notices_for(discord_emu, user)) == 1, f"{user.name} was not notified once"
    statuses = [m.embeds[0]["description"] for m in discord_emu.messages() if is_status(m)]
    assert len(statuses) == 5
    assert sorted("Done" in text for text in statuses) == [False, True, True, True, True]
    assert sum("Failed" in text for text in statuses) == 1
    outcomes = {prompt: outcome_of(discord_emu, h) for prompt, h in gens.items()}
    assert all(len(seen) == 1 for seen in outcomes.values()), outcomes
    assert outcomes[done_early] == outcomes[done_early_too] == ["images"], outcomes
    assert outcomes[refused] == ["failed"], outcomes
    assert outcomes[queued] == ["images"], "the queued job runs after the restart"
    jobs = list(replicate_emu.predictions.values())
    assert len([j for j in jobs if j.input["prompt"] in gens]) == 5, "nothing may be run twice"
    # The rest are the samples of the trained models (one each, at most: see test_train_sample).
    samples = [j.version for j in jobs if j.input["prompt"] not in gens]
    assert len(samples) == len(set(samples)) <= 4, "a training's sample was made twice"
    assert "Traceback" not in second.output


async def test_sigkill_between_create_and_storing_its_id_still_posts_the_images(
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
    database_url: str,
) -> None:
    """The create reached Replicate but the bot died before it heard back: after the
    restart the paid prediction is found among the recent ones (by prompt and seed),
    and its images are posted."""
    replicate_emu.prediction_mode = "manual"
    replicate_emu.hang_next("POST", OFFICIAL_CREATE, process=True)
    env = bot_env(discord_emu, replicate_emu, tmp_path, DATABASE_URL=database_url, LOG_LEVEL="INFO")
    first = BotProcess(env, cwd=tmp_path)
    await first.start()
    try:
        await discord_emu.wait_ready(timeout=15)
        handle = await discord_emu.slash("generate", options={"prompt": "unheard"})
        await replicate_emu.wait_for(lambda: replicate_emu.counts["hung"] == 1, timeout=10)
    finally:
        await first.kill()
    await replicate_emu.complete_prediction(replicate_emu.last_prediction.id)
    second = BotProcess(env, cwd=tmp_path)
    await second.start()
    try:
        await discord_emu.wait_until(lambda: outcome_of(discord_emu, handle), timeout=15)
    finally:
        await second.kill()
    assert outcome_of(discord_emu, handle) == ["images"]
    assert replicate_emu.counts["predictions_created"] == 1


async def test_sigterm_finishes_running_work_then_exits_cleanly(
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
    database_url: str,
) -> None:
    """SIGTERM: a job that finishes within the grace period is posted; one that does not is
    handed back (its prediction goes on, its user is told the images will come) and is
    posted by the next process; the exit is clean. The training outlives the process and
    is notified once after."""
    replicate_emu.training_mode = "manual"
    replicate_emu.prediction_mode = "manual"
    env = bot_env(
        discord_emu,
        replicate_emu,
        tmp_path,
        DATABASE_URL=database_url,
        SHUTDOWN_GRACE_SECONDS="2",
        LOG_LEVEL="INFO",
        **FAST,
    )
    alice, bob, carol = (discord_emu.add_user(name) for name in ("alice", "bob", "carol"))
    bot = BotProcess(env, cwd=tmp_path)
    await bot.start()
    try:
        await discord_emu.wait_ready(timeout=15)
        await started_training(discord_emu, tmp_path, user=carol)
        done, done_id = await running_prediction(discord_emu, replicate_emu, "quick", user=alice)
        slow, slow_id = await running_prediction(discord_emu, replicate_emu, "slow", user=bob)
        bot.signal(signal.SIGTERM)
        await bot.wait_for_log("shutting down", timeout=10)
        await replicate_emu.complete_prediction(done_id)
        await done.wait_original(has_images(), timeout=10)
        handed_back = await slow.wait_original(lambda m: m.content.startswith("⏸️"), timeout=10)
        code = await bot.wait(timeout=15)
    finally:
        await bot.kill()
    assert code == 0, bot.output[-2000:]
    assert "stopped cleanly" in bot.output and "Traceback" not in bot.output
    assert "will be posted" in handed_back.content
    assert replicate_emu.predictions[slow_id].status != "canceled", "nothing is thrown away"
    store = await open_store(env["DATABASE_URL"])
    try:
        [left] = await store.unfinished_generations()
        assert left.prediction_id == slow_id and left.lease_expires_at is not None
    finally:
        await store.close()

    again = BotProcess(env, cwd=tmp_path)
    await again.start()
    try:
        await discord_emu.wait_ready(timeout=15)
        await replicate_emu.complete_training(replicate_emu.last_training.id)
        await discord_emu.wait_for_message(
            discord_emu.channel, lambda m: is_notice(m) and carol.id in m.pinged_user_ids(), 15
        )
        await replicate_emu.complete_prediction(slow_id)
        await discord_emu.wait_for_message(
            discord_emu.channel,
            lambda m: bob.id in m.pinged_user_ids() and len(m.attachments) == 1,
            15,
        )
        await wait_until_quiet(discord_emu, replicate_emu, database_url, poll_seconds=0.05)
    finally:
        await again.kill()
    assert len(notices_for(discord_emu, carol)) == 1
    assert outcome_of(discord_emu, done) == ["images"]
    assert outcome_of(discord_emu, slow) == ["images"], "posted once, after the restart"


# --------------------------------------------------------------------------- webhooks


async def test_forged_and_replayed_webhooks_change_nothing(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    _handle, job = await start_in_webhook_mode(harness, discord_emu, replicate_emu, tmp_path)
    url = job.webhook or ""
    body = json.dumps(job.to_json(replicate_emu.base_url) | {"status": "failed"}).encode()
    other_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    now = int(time.time())
    genuine = replicate_emu.sign(body)
    forged_cases = {
        "signed with another secret": {
            **genuine,
            "webhook-signature": sign_webhook(other_secret, genuine["webhook-id"], now, body),
        },
        "another delivery's id": {**genuine, "webhook-id": "msg_other"},
        "stale timestamp": replicate_emu.sign(body, timestamp=now - 3600),
        "future timestamp": replicate_emu.sign(body, timestamp=now + 3600),
        "unknown scheme": {
            **genuine,
            "webhook-signature": genuine["webhook-signature"].replace("v1,", "v2,"),
        },
        "not base64": {**genuine, "webhook-signature": "v1,!!!not-base64!!!"},
        "no timestamp": {k: v for k, v in genuine.items() if k != "webhook-timestamp"},
        "not a number": {**genuine, "webhook-timestamp": "yesterday"},
        "unsigned": {},
    }
    async with aiohttp.ClientSession() as http:
        for case, headers in forged_cases.items():
            async with http.post(url, data=body, headers=headers) as response:
                assert response.status == 401, case
        tampered = body.replace(b'"failed"', b'"succeeded"')
        async with http.post(url, data=tampered, headers=genuine) as response:
            assert response.status == 401, "a body changed after signing"
        huge = b"{" + b" " * (2 * 1024 * 1024) + b"}"
        async with http.post(url, data=huge, headers=replicate_emu.sign(huge)) as response:
            assert response.status == 413
        for payload, expected in (
            (b"not json", "ignored"),
            (json.dumps({"id": "nosuchtraining", "status": "failed"}).encode(), "unknown"),
        ):
            async with http.post(url, data=payload, headers=replicate_emu.sign(payload)) as r:
                assert r.status == 200 and (await r.json())["status"] == expected
    stored = (await harness.services.store.recent_trainings(guild_id=None, user_id=None))[0]
    assert stored.status in ("starting", "processing"), "a forged delivery changed the training"
    assert [m for m in discord_emu.messages() if is_notice(m)] == []

    await replicate_emu.complete_training(job.id)
    notice = await discord_emu.wait_for_message(discord_emu.channel, is_notice, timeout=5)
    delivered = await replicate_emu.wait_for(
        lambda: next(
            (
                d
                for d in replicate_emu.webhook_deliveries
                if "completed" in d.events and d.status == 200
            ),
            None,
        )
    )
    # A captured genuine delivery replayed as is (its timestamp is still fresh), after a
    # restart of the bot: recognised by its id. The same news under a new id changes
    # nothing either.
    await harness.restart()
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=delivered.body, headers=delivered.headers) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "duplicate"
        fresh = replicate_emu.sign(delivered.body)
        async with http.post(url, data=delivered.body, headers=fresh) as response:
            assert response.status == 200
    database_url = harness.env["DATABASE_URL"]
    await wait_until_quiet(discord_emu, replicate_emu, database_url, poll_seconds=0)
    assert [m for m in discord_emu.messages() if is_notice(m)] == [notice]


# --------------------------------------------------------------------------- bad zips


class _Writes:
    """Every file-system write of this process while active (by one thread, or by any
    when ``thread`` is None), by path."""

    active = False
    thread: threading.Thread | None = None
    paths: list[str] = []  # noqa: RUF012 - process-wide on purpose
    lock = threading.Lock()
    # event -> index of its dir_fd argument (None: it has none); paths relative to a
    # dir_fd (as shutil.rmtree passes them) are resolved through /proc/self/fd.
    EVENTS: ClassVar[dict[str, int | None]] = {
        "os.mkdir": 2,
        "os.rename": 2,
        "os.remove": 1,
        "os.rmdir": 1,
        "os.symlink": 2,
        "os.link": None,
        "os.truncate": None,
        "os.chmod": 2,
        "shutil.copyfile": None,
        "tempfile.mkstemp": None,
    }

    @classmethod
    def hook(cls, event: str, args: tuple[object, ...]) -> None:
        if not cls.active or cls.thread not in (None, threading.current_thread()):
            return
        path: object = None
        if event == "open":
            name, mode, flags = args
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            if isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                writing = True
            if writing:
                path = name
        elif event in cls.EVENTS and args:
            path = args[0]
            where = cls.EVENTS[event]
            dir_fd = args[where] if where is not None and len(args) > where else None
            if isinstance(path, str | bytes) and isinstance(dir_fd, int) and dir_fd >= 0:
                path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), os.fsdecode(path))
        if isinstance(path, str | bytes | os.PathLike):
            with cls.lock:
                cls.paths.append(os.fsdecode(path))


sys.addaudithook(_Writes.hook)


@contextmanager
def recorded_writes(thread: threading.Thread | None = None) -> Iterator[list[str]]:
    _Writes.paths = []
    _Writes.thread = thread
    _Writes.active = True
    try:
        yield _Writes.paths
    finally:
        _Writes.active = False


HOSTILE_ZIPS = {
    "traversal": [zips.image_entry("ok.jpg"), zips.traversal_entry("a/../../../escaped.jpg")],
    "absolute": [zips.image_entry("ok.jpg"), zips.Entry("/etc/evil.jpg", zips.image_bytes())],
    "symlink": [zips.image_entry("ok.jpg"), zips.symlink_entry("link.jpg", "/etc/passwd")],
    "bomb": [zips.bomb_entry("bomb.png", size=64 * 1024 * 1024)],
    "nested": [zips.image_entry("ok.jpg"), zips.nested_zip_entry("more.zip")],
    "lying sizes": [zips.Entry("big.jpg", zips.image_bytes(noise=True), declared_size=10)],
}


async def commands_done(timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Wait for the in-process bot's command handlers (their cleanup included) to end."""
    running = [
        task
        for task in asyncio.all_tasks()
        if task.get_name() == "CommandTree-invoker" and task is not asyncio.current_task()
    ]
    if running:
        await asyncio.wait(running, timeout=timeout)


def outside_train_folders(paths: list[str], temp_root: Path) -> tuple[list[str], set[Path]]:
    """The written paths that are not inside a ``train-*`` folder of the temp root, and
    the ``train-*`` folders written to."""
    outside, folders = [], set()
    for written in paths:
        resolved = Path(written).resolve()
        if not resolved.is_relative_to(temp_root):
            outside.append(written)
            continue
        top = resolved.relative_to(temp_root).parts[0]
        if not top.startswith("train-"):
            outside.append(written)
        folders.add(temp_root / top)
    return outside, folders


async def test_hostile_zips_are_refused_and_only_the_temp_folder_is_written(
    running: BotHarness, discord_emu: DiscordEmulator, replicate_emu: ReplicateEmulator
) -> None:
    temp_root = Path(tempfile.gettempdir())
    for kind, entries in HOSTILE_ZIPS.items():
        data = zips.zip_bytes(entries)
        with recorded_writes() as writes:
            handle = await discord_emu.slash(
                "train",
                options={"trigger_word": "TOK", "model_name": "hostile"},
                attachments={"images": ("photos.zip", data)},
            )
            message = await handle.wait_original(lambda m: m.content.startswith("❌"), 10)
            await commands_done()
        assert message.ephemeral, kind
        assert writes, f"{kind}: the upload was not downloaded at all"
        outside, folders = outside_train_folders(writes, temp_root)
        assert outside == [], f"{kind}: written outside the temporary folder"
        assert not any(folder.exists() for folder in folders), f"{kind}: folder left behind"
    counts = replicate_emu.counts
    assert counts["files_created"] == counts["trainings_created"] == 0
