"""The emulator itself, driven by the real ``replicate`` client (and the spec checker)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import replicate
import trustme
from PIL import Image
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput

from services.webhooks import verify_webhook
from tests.emulators.replicate import (
    TRAINER_MODEL,
    TRAINER_VERSION,
    TRAINER_VERSION_ID,
    ReplicateEmulator,
    WebhookReceiver,
)
from tests.emulators.spec import SpecChecker
from tests.emulators.spec_exceptions import is_known_exception

PREDICTION = {
    "id": "abc",
    "model": "black-forest-labs/flux-schnell",
    "version": "0123",
    "input": {"prompt": "x"},
    "output": None,
    "data_removed": False,
    "error": None,
    "status": "starting",
    "created_at": "2025-01-01T00:00:00.000000Z",
    "urls": {
        "get": "https://api.replicate.com/v1/predictions/abc",
        "cancel": "https://api.replicate.com/v1/predictions/abc/cancel",
        "web": "https://replicate.com/p/abc",
    },
}


@pytest.fixture
async def client(replicate_emu: ReplicateEmulator) -> AsyncIterator[replicate.Client]:
    """The bare client; its connections are closed through the transport we own."""
    transport = httpx.AsyncHTTPTransport()
    client = replicate.Client(
        api_token=replicate_emu.token, base_url=replicate_emu.base_url, transport=transport
    )
    client.poll_interval = 0.02
    yield client
    await transport.aclose()


def check_get_prediction(checker: SpecChecker, body: dict, status: int = 200) -> None:
    checker.check(
        "GET",
        "/v1/predictions/abc",
        {},
        {"Authorization": "Bearer x"},
        "",
        None,
        status,
        "application/json",
        {},
        json.dumps(body).encode(),
    )


# ----------------------------------------------------------------------- spec checker


def test_checker_accepts_a_valid_prediction():
    checker = SpecChecker("replicate", "replicate-openapi.json", "https://api.replicate.com")
    check_get_prediction(checker, PREDICTION)
    checker.assert_clean()


def test_checker_catches_off_spec_responses():
    checker = SpecChecker("replicate", "replicate-openapi.json", "https://api.replicate.com")
    broken = {k: v for k, v in PREDICTION.items() if k != "urls"}
    broken["status"] = "done"
    check_get_prediction(checker, broken)
    assert len(checker.violations) == 1
    message = checker.violations[0].message
    assert "'urls' is a required property" in message
    assert "'done' is not one of" in message
    with pytest.raises(AssertionError, match="1 spec violation"):
        checker.assert_clean()


def test_an_exception_silences_only_its_own_error():
    """'hidden' is a known disagreement; a missing field in the same body is not."""
    checker = SpecChecker("replicate", "replicate-openapi.json", "https://api.replicate.com")
    check_get_prediction(checker, {**PREDICTION, "version": "hidden"})
    assert checker.violations == [] and len(checker.skipped) == 1

    broken = {k: v for k, v in PREDICTION.items() if k != "urls"}
    check_get_prediction(checker, {**broken, "version": "hidden"})
    assert len(checker.violations) == 1
    assert "'urls' is a required property" in checker.violations[0].message
    assert "hidden" not in checker.violations[0].message.split("\n", 1)[1]


def test_undocumented_error_statuses_only_for_errors():
    msg = "ResponseNotFound: Unknown response http status: {}"
    assert is_known_exception("replicate", "GET", "/v1/account", "response", msg.format(401))
    assert is_known_exception("replicate", "POST", "/v1/predictions", "response", msg.format(503))
    assert not is_known_exception("replicate", "GET", "/v1/account", "response", msg.format(204))
    assert not is_known_exception("replicate", "GET", "/v1/account", "request", msg.format(401))
    assert not is_known_exception("discord", "GET", "/v1/account", "response", msg.format(401))


async def test_emulator_reports_a_mangled_answer(replicate_ca: trustme.CA, replicate_ca_file):
    """Through the whole stack: an off-spec answer is recorded by the middleware."""
    async with ReplicateEmulator(replicate_ca) as emu:
        emu.mangle_next("GET", "/v1/account", lambda body: {**body, "type": "robot"})
        transport = httpx.AsyncHTTPTransport()
        client = replicate.Client(api_token=emu.token, base_url=emu.base_url, transport=transport)
        with pytest.raises(ValueError):  # the client's own validation refuses it too
            await client.accounts.async_current()
        await transport.aclose()
    assert len(emu.checker.violations) == 1
    assert "'robot' is not one of" in emu.checker.violations[0].message


# ----------------------------------------------------------------------- API surface


async def test_wrong_token_is_a_401_problem(replicate_emu: ReplicateEmulator):
    async with httpx.AsyncClient(base_url=replicate_emu.base_url) as http:
        resp = await http.get("/v1/account", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass a valid authentication token",
        "status": 401,
    }


async def test_models_and_versions(client: replicate.Client, replicate_emu: ReplicateEmulator):
    trainer = await client.models.async_get(TRAINER_MODEL)
    assert trainer.latest_version is not None and trainer.latest_version.id == TRAINER_VERSION_ID
    version = await trainer.versions.async_get(TRAINER_VERSION_ID)
    assert (
        version.cog_version and "TrainingInput" in version.openapi_schema["components"]["schemas"]
    )
    assert f"{TRAINER_MODEL}:{TRAINER_VERSION_ID}" == TRAINER_VERSION
    assert len(TRAINER_VERSION_ID) == 64

    created = await client.models.async_create(
        replicate_emu.username, "new-model", visibility="private", hardware="gpu-t4"
    )
    assert (created.owner, created.visibility) == (replicate_emu.username, "private")
    with pytest.raises(ReplicateError) as info:
        await client.models.async_create(
            replicate_emu.username, "new-model", visibility="private", hardware="gpu-t4"
        )
    assert info.value.status == 409
    with pytest.raises(ReplicateError) as info:
        await client.models.async_create(
            replicate_emu.username, "Bad_Name", visibility="private", hardware="gpu-t4"
        )
    assert info.value.status == 422
    with pytest.raises(ReplicateError) as info:
        await client.models.async_get("nobody/nothing")
    assert info.value.status == 404


async def test_async_run_with_a_trained_version(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    """async_run on owner/name:version also fetches the version (openapi_schema and
    cog_version needed); outputs arrive as FileOutput read over verified TLS."""
    model = replicate_emu.add_model(replicate_emu.username, "lora", with_version=True)
    ref = f"{model.ref}:{model.latest_version.id}"
    output = await client.async_run(ref, input={"prompt": "TOK", "num_outputs": 2}, wait=False)
    assert isinstance(output, list) and len(output) == 2
    assert all(isinstance(item, FileOutput) for item in output)
    data = await output[0].aread()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
    assert any(
        p.startswith("/v1/models/") and "/versions/" in p for _, p, _ in replicate_emu.requests
    )


async def test_prefer_wait_holds_until_done(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    prediction = await client.models.predictions.async_create(
        model="black-forest-labs/flux-schnell", input={"prompt": "x"}, wait=5
    )
    assert prediction.status == "succeeded" and prediction.output


async def test_prefer_wait_returns_current_state_after_n_seconds(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    replicate_emu.prediction_mode = "manual"
    start = time.monotonic()
    prediction = await client.models.predictions.async_create(
        model="black-forest-labs/flux-schnell", input={"prompt": "x"}, wait=1
    )
    assert prediction.status == "starting"
    assert time.monotonic() - start >= 0.9


async def test_files(client: replicate.Client, replicate_emu: ReplicateEmulator):
    created = await client.files.async_create(
        io.BytesIO(b"PK\x03\x04zip"),
        filename="images.zip",
        content_type="application/zip",
        metadata={"user": "42"},
    )
    assert created.size == 7 and created.metadata == {"user": "42"}
    fetched = await client.files.async_get(created.id)
    assert fetched.checksums == created.checksums
    assert replicate_emu.counts["files_created"] == 1


async def test_training_destination_rules(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    with pytest.raises(ReplicateError) as info:
        await client.trainings.async_create(
            TRAINER_MODEL,
            TRAINER_VERSION_ID,
            {"input_images": "https://example.com/a.zip"},
            destination=f"{replicate_emu.username}/missing",
        )
    assert info.value.status == 404
    assert info.value.detail == "The specified training destination does not exist"
    with pytest.raises(ReplicateError) as info:
        await client.trainings.async_create(
            TRAINER_MODEL,
            TRAINER_VERSION_ID,
            {"input_images": "https://example.com/a.zip"},
            destination=f"{replicate_emu.username}/Not Valid",
        )
    assert info.value.status == 422
    assert replicate_emu.counts["trainings_created"] == 0


async def test_training_output_and_new_version(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    replicate_emu.training_mode = "manual"
    replicate_emu.add_model(replicate_emu.username, "face")
    training = await client.trainings.async_create(
        TRAINER_MODEL,
        TRAINER_VERSION_ID,
        {"input_images": "https://example.com/a.zip", "steps": 10},
        destination=f"{replicate_emu.username}/face",
    )
    await replicate_emu.advance_training(training.id, step=5)
    current = await client.trainings.async_get(training.id)
    assert "| 5/10 [" in current.logs and current.output is None
    await replicate_emu.complete_training(training.id)
    done = await client.trainings.async_get(training.id)
    version = done.output["version"]
    assert version.startswith(f"{replicate_emu.username}/face:")
    assert done.destination == f"{replicate_emu.username}/face"
    model = replicate_emu.models[f"{replicate_emu.username}/face"]
    assert model.latest_version.id == version.rsplit(":", 1)[1]
    async with httpx.AsyncClient() as http:  # weights served over the trusted TLS server
        assert (await http.get(done.output["weights"])).status_code == 200


# ----------------------------------------------------------------------- scripting


async def test_outputs_expire(client: replicate.Client, replicate_emu: ReplicateEmulator):
    prediction = await client.models.predictions.async_create(
        model="black-forest-labs/flux-schnell", input={"prompt": "x"}, wait=5
    )
    url = prediction.output[0]
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 200
        replicate_emu.expire_outputs()
        assert (await http.get(url)).status_code == 404
    expired = await client.predictions.async_get(prediction.id)
    assert expired.output is None


@pytest.mark.parametrize(
    ("aspect_ratio", "expected"), [("1:1", (64, 64)), ("16:9", (88, 48)), ("9:16", (48, 88))]
)
async def test_image_size_follows_aspect_ratio(
    client: replicate.Client,
    replicate_emu: ReplicateEmulator,
    aspect_ratio: str,
    expected: tuple[int, int],
):
    replicate_emu.output_mode = "data"
    prediction = await client.models.predictions.async_create(
        model="black-forest-labs/flux-schnell",
        input={"prompt": "x", "aspect_ratio": aspect_ratio, "output_format": "png"},
        wait=5,
    )
    data = await FileOutput(prediction.output[0], client).aread()
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == expected


async def test_next_output_bytes(client: replicate.Client, replicate_emu: ReplicateEmulator):
    replicate_emu.next_output_bytes = 2_000_000
    prediction = await client.models.predictions.async_create(
        model="black-forest-labs/flux-schnell", input={"prompt": "x"}, wait=5
    )
    data = await FileOutput(prediction.output[0], client).aread()
    assert 1_900_000 < len(data) < 2_100_000
    with Image.open(io.BytesIO(data)) as image:
        image.load()
    # Only the next prediction is big.
    small = await client.models.predictions.async_create(
        model="black-forest-labs/flux-schnell", input={"prompt": "x"}, wait=5
    )
    assert len(await FileOutput(small.output[0], client).aread()) < 10_000


async def test_error_next_counts(client: replicate.Client, replicate_emu: ReplicateEmulator):
    replicate_emu.error_next("GET", "/v1/account", 418, count=2)
    for _ in range(2):
        with pytest.raises(ReplicateError) as info:
            await client.accounts.async_current()
        assert info.value.status == 418
    assert (await client.accounts.async_current()).username == replicate_emu.username


async def test_hang_until_released(client: replicate.Client, replicate_emu: ReplicateEmulator):
    replicate_emu.hang_next("GET", "/v1/account")
    task = asyncio.create_task(client.accounts.async_current())
    await replicate_emu.wait_for(lambda: replicate_emu.counts["hung"] == 1)
    assert not task.done()
    replicate_emu.release_hangs()
    assert (await task).username == replicate_emu.username


async def test_rate_limit_header(replicate_emu: ReplicateEmulator):
    replicate_emu.rate_limit_next_create(retry_after=7)
    async with httpx.AsyncClient(base_url=replicate_emu.base_url) as http:
        resp = await http.post(
            "/v1/predictions",
            json={"version": "x", "input": {}},
            headers={"Authorization": f"Bearer {replicate_emu.token}"},
        )
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"


async def test_prediction_webhooks_are_signed_and_filtered(
    client: replicate.Client,
    replicate_emu: ReplicateEmulator,
    webhook_receiver: WebhookReceiver,
):
    await client.models.predictions.async_create(
        model="black-forest-labs/flux-schnell",
        input={"prompt": "x"},
        webhook=webhook_receiver.url,
        webhook_events_filter=["start", "completed"],
    )
    await webhook_receiver.wait_for(lambda: len(webhook_receiver.received) == 2)
    statuses = []
    for headers, body in webhook_receiver.received:
        verify_webhook(headers, body, replicate_emu.webhook_secret)
        statuses.append(json.loads(body)["status"])
    assert statuses == ["starting", "succeeded"]
    assert [d.events for d in replicate_emu.webhook_deliveries] == [("start",), ("completed",)]


async def test_webhook_retries_then_gives_up(
    client: replicate.Client,
    replicate_emu: ReplicateEmulator,
    webhook_receiver: WebhookReceiver,
):
    replicate_emu.webhook_max_attempts = 3
    replicate_emu.webhook_retry_delay = 0.01
    webhook_receiver.statuses = [500, 502, 503]
    await client.models.predictions.async_create(
        model="black-forest-labs/flux-schnell",
        input={"prompt": "x"},
        webhook=webhook_receiver.url,
        webhook_events_filter=["completed"],
    )
    await replicate_emu.wait_for(lambda: len(replicate_emu.webhook_deliveries) == 3)
    assert [d.attempt for d in replicate_emu.webhook_deliveries] == [1, 2, 3]
    assert len({d.headers["webhook-id"] for d in replicate_emu.webhook_deliveries}) == 1
    assert replicate_emu.counts["webhooks_delivered"] == 0


async def test_listing_keeps_the_predictions_created_in_a_time(
    client: replicate.Client, replicate_emu: ReplicateEmulator
):
    """``created_after`` (inclusive) and ``created_before`` filter the listing, and its
    next page keeps them."""
    replicate_emu.list_page_size = 1
    for prompt in ("a", "b", "c"):
        await client.models.predictions.async_create(
            model="black-forest-labs/flux-schnell", input={"prompt": prompt}
        )
    jobs = sorted(replicate_emu.predictions.values(), key=lambda j: j.created_at)
    headers = {"Authorization": f"Bearer {replicate_emu.token}"}

    async def prompts(query: dict[str, str]) -> list[str]:
        found: list[str] = []
        url: str | None = "/v1/predictions"
        params: dict[str, str] | None = query
        async with httpx.AsyncClient(base_url=replicate_emu.base_url) as http:
            while url:
                page = (await http.get(url, params=params, headers=headers)).json()
                found += [p["input"]["prompt"] for p in page["results"]]
                url, params = page["next"], None
        return found

    second = jobs[1].created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert await prompts({"created_before": second}) == ["a"]
    assert await prompts({"created_after": second}) == ["c", "b"]
    assert await prompts({}) == ["c", "b", "a"]
