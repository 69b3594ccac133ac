"""ReplicateService against the emulator: the real client, real sockets, real TLS."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from services.replicate import (
    Account,
    AuthError,
    GenerationCanceled,
    InvalidInputError,
    InvalidModelError,
    ModelFailedError,
    ModelNotFoundError,
    NotFoundError,
    NSFWError,
    OutputExpired,
    OutputTooLarge,
    Progress,
    RateLimitedError,
    ReplicateService,
    ReplicateServiceError,
    ReplicateUnavailable,
    TrainingState,
    parse_model_ref,
    parse_training_progress,
    sniff_content_type,
)
from services.replicate import poller as poller_module
from services.webhooks import verify_webhook
from tests.emulators.replicate import (
    NSFW_LORA,
    NSFW_OFFICIAL,
    TRAINER_VERSION,
    ZIP_ERROR,
    ReplicateEmulator,
    WebhookReceiver,
)

SCHNELL = "black-forest-labs/flux-schnell"
OFFICIAL_CREATE = r"/v1/models/[^/]+/[^/]+/predictions"


def make_service(emu: ReplicateEmulator, **kwargs: object) -> ReplicateService:
    options: dict = {"poll_interval": 0.02, "request_timeout": 5.0, **kwargs}
    token = options.pop("token", emu.token)
    return ReplicateService(str(token), base_url=emu.base_url, **options)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", b"\x89PNG\r\n\x1a\nfake")
    return buffer.getvalue()


class ProgressLog:
    """An ``on_progress`` callback that tests can wait on (no sleeps)."""

    def __init__(self) -> None:
        self.items: list[Progress] = []
        self._cond = asyncio.Condition()

    async def __call__(self, progress: Progress) -> None:
        self.items.append(progress)
        async with self._cond:
            self._cond.notify_all()

    @property
    def statuses(self) -> list[str]:
        return [p.status for p in self.items]

    async def wait_for_status(self, status: str, timeout: float = 5.0) -> Progress:  # noqa: ASYNC109
        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(lambda: status in self.statuses), timeout)
        return next(p for p in self.items if p.status == status)


async def started_generation(
    service: ReplicateService, emu: ReplicateEmulator, *args: object, **kwargs: object
) -> tuple[asyncio.Task, str]:
    """Start generate() in a task and return it with the prediction id it reported."""
    progress = ProgressLog()
    task = asyncio.create_task(service.generate(*args, on_progress=progress, **kwargs))
    first = await progress.wait_for_status("starting")
    return task, first.prediction_id


# ----------------------------------------------------------------------- account, ping


async def test_account(replicate_service: ReplicateService, replicate_emu: ReplicateEmulator):
    assert await replicate_service.account() == Account(
        username=replicate_emu.username, name="Emulated User", type="user"
    )


async def test_ping_measures_round_trip(replicate_service: ReplicateService):
    elapsed_ms = await replicate_service.ping(timeout=60)
    assert elapsed_ms > 0


async def test_ping_timeout_is_unavailable(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.hang_next("GET", "/v1/account")
    with pytest.raises(ReplicateUnavailable):
        await replicate_service.ping(timeout=0.2)


async def test_ping_with_bad_token_is_unavailable(replicate_emu: ReplicateEmulator):
    service = make_service(replicate_emu, token="r8_wrong")
    try:
        with pytest.raises(ReplicateUnavailable) as info:
            await service.ping(timeout=2)
        assert isinstance(info.value.__cause__, AuthError)
    finally:
        await service.aclose()


async def test_bad_token_is_auth_error_and_token_never_shown(replicate_emu: ReplicateEmulator):
    token = "r8_secretWrongToken42"
    service = make_service(replicate_emu, token=token)
    try:
        with pytest.raises(AuthError) as info:
            await service.generate(SCHNELL, "a cat")
        err = info.value
        for text in (str(err), repr(err), err.user_message, repr(service)):
            assert token not in text
        assert replicate_emu.counts["predictions_created"] == 0
    finally:
        await service.aclose()


async def test_webhook_secret_is_cached(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    first = await replicate_service.webhook_secret()
    second = await replicate_service.webhook_secret()
    assert first == second == replicate_emu.webhook_secret
    assert replicate_emu.request_count("GET", "/v1/webhooks/default/secret") == 1


# ----------------------------------------------------------------------- generation


async def test_generate_official_https_outputs(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.prediction_mode = "manual"
    progress = ProgressLog()
    task = asyncio.create_task(
        replicate_service.generate(
            SCHNELL,
            "a lighthouse",
            {"num_outputs": 2, "aspect_ratio": "16:9", "output_format": "png", "seed": 42},
            on_progress=progress,
        )
    )
    created = await progress.wait_for_status("starting")
    await replicate_emu.start_prediction(created.prediction_id)
    await progress.wait_for_status("processing")
    await replicate_emu.complete_prediction(created.prediction_id)
    result = await task

    assert len(result.images) == 2
    for index, image in enumerate(result.images):
        assert image.content_type == "image/png"
        assert image.filename == f"out-{index}.png"
        with Image.open(io.BytesIO(image.data)) as decoded:
            assert decoded.format == "PNG"
            assert decoded.width > decoded.height  # 16:9
    assert result.seed == 42
    assert result.model == SCHNELL
    assert result.prediction_id == replicate_emu.last_prediction.id
    assert result.created_at and result.started_at and result.completed_at
    assert result.total_seconds is not None and result.queue_seconds is not None
    assert result.predict_time is not None and result.predict_time > 0
    # Progress: the id first (status starting), then every status change.
    assert progress.statuses == ["starting", "processing", "succeeded"]
    assert {p.prediction_id for p in progress.items} == {result.prediction_id}
    assert replicate_emu.last_prediction_input == {
        "num_outputs": 2,
        "aspect_ratio": "16:9",
        "output_format": "png",
        "seed": 42,
        "prompt": "a lighthouse",
    }
    # The output host never sees the API token.
    assert replicate_emu.output_requests
    for _, headers in replicate_emu.output_requests:
        assert "Authorization" not in headers


async def test_generate_data_url_outputs(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.output_mode = "data"
    result = await replicate_service.generate(SCHNELL, "a fox", {"output_format": "jpg"})
    assert [i.content_type for i in result.images] == ["image/jpeg"]
    assert result.images[0].filename == "out-0.jpg"
    assert replicate_emu.output_requests == []
    # No seed in the options: it comes from the logs ("Using seed: N").
    assert result.seed == replicate_emu.last_prediction.seed


async def test_generate_default_webp(replicate_service: ReplicateService):
    result = await replicate_service.generate(SCHNELL, "a fox", {"seed": None})
    assert result.images[0].content_type == "image/webp"
    with Image.open(io.BytesIO(result.images[0].data)) as decoded:
        assert decoded.format == "WEBP"


async def test_generate_trained_model_by_version(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    model = replicate_emu.add_model(replicate_emu.username, "my-lora", with_version=True)
    version = model.latest_version.id
    result = await replicate_service.generate(
        f"{model.ref}:{version}", "TOK on a beach", {"lora_scale": 0.8}
    )
    assert len(result.images) == 1
    assert result.model == f"{model.ref}:{version}"
    method, path, body = next(r for r in replicate_emu.requests if r[0] == "POST")
    assert (method, path) == ("POST", "/v1/predictions")
    assert body["version"] == version


async def test_concurrent_generations_share_one_service(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    results = await asyncio.gather(
        *(replicate_service.generate(SCHNELL, f"cat {n}") for n in range(5))
    )
    assert len({r.prediction_id for r in results}) == 5
    assert replicate_emu.counts["predictions_created"] == 5


async def test_progress_callback_failure_does_not_abort(replicate_service: ReplicateService):
    async def broken(progress: Progress) -> None:
        raise RuntimeError("message deleted")

    result = await replicate_service.generate(SCHNELL, "a cat", on_progress=broken)
    assert result.images


async def test_transient_poll_errors_are_tolerated(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.prediction_latency = 0.2
    replicate_emu.error_next("GET", r"/v1/predictions/[^/]+", 500, count=2)
    result = await replicate_service.generate(SCHNELL, "a cat")
    assert result.images


# ----------------------------------------------------------------------- failure modes


@pytest.mark.parametrize("text", [NSFW_OFFICIAL, NSFW_LORA])
async def test_nsfw_refusals(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator, text: str
):
    replicate_emu.fail_next_prediction(text)
    with pytest.raises(NSFWError) as info:
        await replicate_service.generate(SCHNELL, "something")
    assert "safety filter" in info.value.user_message


async def test_nsfw_on_trained_model(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    model = replicate_emu.add_model(replicate_emu.username, "lora-x", with_version=True)
    replicate_emu.fail_next_prediction(NSFW_LORA)
    with pytest.raises(NSFWError):
        await replicate_service.generate(f"{model.ref}:{model.latest_version.id}", "something")


async def test_invalid_input_carries_detail(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    with pytest.raises(InvalidInputError) as info:
        await replicate_service.generate(SCHNELL, "a cat", {"num_outputs": 5})
    assert "num_outputs" in info.value.detail
    assert "num_outputs" in info.value.user_message
    assert replicate_emu.counts["predictions_created"] == 0


async def test_model_failure_text_is_trimmed(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.fail_next_prediction("CUDA out of memory. " * 50)
    with pytest.raises(ModelFailedError) as info:
        await replicate_service.generate(SCHNELL, "a cat")
    assert info.value.error.startswith("CUDA out of memory.")
    assert len(info.value.error) <= 300
    assert info.value.error in info.value.user_message


async def test_rate_limited_create_is_retried_after_retry_after(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.rate_limit_next_create(retry_after=0.2, count=2)
    start = time.monotonic()
    result = await replicate_service.generate(SCHNELL, "a cat")
    assert result.images
    assert time.monotonic() - start >= 0.4  # Retry-After honoured twice
    assert replicate_emu.request_count("POST", OFFICIAL_CREATE) == 3
    assert replicate_emu.counts["predictions_created"] == 1


async def test_rate_limit_exhausted(replicate_emu: ReplicateEmulator):
    service = make_service(replicate_emu, max_create_retries=2)
    replicate_emu.rate_limit_next_create(retry_after=0, count=10)
    try:
        with pytest.raises(RateLimitedError) as info:
            await service.generate(SCHNELL, "a cat")
        assert info.value.retry_after == 0.0
        assert replicate_emu.request_count("POST", OFFICIAL_CREATE) == 3
        assert replicate_emu.counts["predictions_created"] == 0
    finally:
        await service.aclose()


async def test_server_error_on_create_is_not_retried(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    # The worst case: the job was created, then the answer was a 500.
    replicate_emu.error_next("POST", OFFICIAL_CREATE, 500, process=True)
    with pytest.raises(ReplicateUnavailable):
        await replicate_service.generate(SCHNELL, "a cat")
    assert replicate_emu.request_count("POST", OFFICIAL_CREATE) == 1
    assert replicate_emu.counts["predictions_created"] == 1


@pytest.mark.parametrize("status", [502, 503])
async def test_gateway_errors_on_create_are_not_retried(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator, status: int
):
    replicate_emu.error_next("POST", OFFICIAL_CREATE, status)
    with pytest.raises(ReplicateUnavailable):
        await replicate_service.generate(SCHNELL, "a cat")
    assert replicate_emu.request_count("POST", OFFICIAL_CREATE) == 1


async def test_create_timeout_is_unavailable_and_not_retried(replicate_emu: ReplicateEmulator):
    service = make_service(replicate_emu, request_timeout=0.3)
    replicate_emu.hang_next("POST", OFFICIAL_CREATE, process=True)
    try:
        with pytest.raises(ReplicateUnavailable):
            await service.generate(SCHNELL, "a cat")
        assert replicate_emu.request_count("POST", OFFICIAL_CREATE) == 1
        assert replicate_emu.counts["predictions_created"] == 1  # it did start: never retry
    finally:
        replicate_emu.release_hangs()
        await service.aclose()


async def test_canceled_prediction(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.prediction_mode = "manual"
    task, prediction_id = await started_generation(replicate_service, replicate_emu, SCHNELL, "x")
    await replicate_service.cancel_prediction(prediction_id)
    with pytest.raises(GenerationCanceled):
        await task
    assert replicate_emu.counts["predictions_canceled"] == 1


async def test_cancel_unknown_prediction(replicate_service: ReplicateService):
    with pytest.raises(NotFoundError):
        await replicate_service.cancel_prediction("doesnotexist")


async def test_output_expired_before_download(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.prediction_mode = "manual"
    task, prediction_id = await started_generation(replicate_service, replicate_emu, SCHNELL, "x")
    await replicate_emu.complete_prediction(prediction_id)
    replicate_emu.expire_outputs()  # before the service's next poll
    with pytest.raises(OutputExpired):
        await task


async def test_output_file_gone_on_download(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.prediction_mode = "manual"
    task, prediction_id = await started_generation(replicate_service, replicate_emu, SCHNELL, "x")
    await replicate_emu.complete_prediction(prediction_id)
    replicate_emu.expire_outputs(null_output=False)  # URLs still listed, files 404
    with pytest.raises(OutputExpired):
        await task


@pytest.mark.parametrize("mode", ["https", "data"])
async def test_output_too_large(replicate_emu: ReplicateEmulator, mode: str):
    service = make_service(replicate_emu, max_output_bytes=20_000)
    replicate_emu.output_mode = mode
    replicate_emu.next_output_bytes = 60_000
    try:
        with pytest.raises(OutputTooLarge):
            await service.generate(SCHNELL, "a huge cat")
    finally:
        await service.aclose()


async def test_large_output_within_limit_is_decodable(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.next_output_bytes = 300_000
    result = await replicate_service.generate(SCHNELL, "a big cat")
    image = result.images[0]
    assert 250_000 < len(image.data) < 350_000
    assert image.content_type == "image/png"
    with Image.open(io.BytesIO(image.data)) as decoded:
        decoded.load()


async def test_unknown_model_and_version(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    with pytest.raises(ModelNotFoundError):
        await replicate_service.generate("nobody/nothing", "x")
    with pytest.raises(ModelNotFoundError):
        await replicate_service.generate(f"{replicate_emu.username}/ghost:{'ab' * 32}", "x")


@pytest.mark.parametrize(
    "ref", ["", "flux", "a/b/c", "owner/name:short", "/name", "owner/na me", "owner/name:"]
)
async def test_malformed_model_refs_make_no_request(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator, ref: str
):
    with pytest.raises(InvalidModelError):
        await replicate_service.generate(ref or " ", "x")
    assert replicate_emu.requests == []


async def test_error_messages_are_plain_and_domain_typed(replicate_emu: ReplicateEmulator):
    """Every domain error is a ReplicateServiceError with a short user message."""
    service = make_service(replicate_emu)
    replicate_emu.error_next("GET", "/v1/account", 500)
    try:
        with pytest.raises(ReplicateServiceError) as info:
            await service.account()
        assert isinstance(info.value, ReplicateUnavailable)
        assert len(info.value.user_message) < 120
    finally:
        await service.aclose()


# ----------------------------------------------------------------------- models, files


async def test_ensure_model_creates_private_model_once(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    owner = replicate_emu.username
    assert not await replicate_service.model_exists(owner, "new-lora")
    assert await replicate_service.ensure_model(owner, "new-lora") is True
    assert await replicate_service.ensure_model(owner, "new-lora") is False
    assert await replicate_service.model_exists(owner, "new-lora")
    assert replicate_emu.models[f"{owner}/new-lora"].visibility == "private"
    assert replicate_emu.counts["models_created"] == 1


async def test_ensure_model_concurrently(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    results = await asyncio.gather(
        *(replicate_service.ensure_model(replicate_emu.username, "race") for _ in range(3))
    )
    assert sorted(results) == [False, False, True]
    assert replicate_emu.counts["models_created"] == 1


async def test_ensure_model_for_another_owner_fails(replicate_service: ReplicateService):
    with pytest.raises(AuthError):
        await replicate_service.ensure_model("someone-else", "lora")


async def test_ensure_model_rejects_bad_names(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    with pytest.raises(InvalidModelError):
        await replicate_service.ensure_model(replicate_emu.username, "bad name")
    assert replicate_emu.requests == []


async def test_upload_file_object(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    data = zip_bytes()
    uploaded = await replicate_service.upload(io.BytesIO(data))
    stored = replicate_emu.files[uploaded.id]
    assert stored.data == data
    assert stored.name == "data.zip"
    assert stored.content_type == "application/zip"
    assert uploaded.size == len(data)
    assert uploaded.url == f"{replicate_emu.base_url}/v1/files/{uploaded.id}"


async def test_upload_path(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator, tmp_path: Path
):
    path = tmp_path / "images.zip"
    path.write_bytes(zip_bytes())
    uploaded = await replicate_service.upload(path, filename="images.zip")
    assert replicate_emu.files[uploaded.id].data == path.read_bytes()
    assert replicate_emu.files[uploaded.id].name == "images.zip"
    assert replicate_emu.counts["files_created"] == 1


# ----------------------------------------------------------------------- trainings


async def _training_setup(
    service: ReplicateService, emu: ReplicateEmulator, data: bytes | None = None
) -> tuple[str, str]:
    destination = f"{emu.username}/my-face"
    await service.ensure_model(emu.username, "my-face")
    uploaded = await service.upload(io.BytesIO(data if data is not None else zip_bytes()))
    return destination, uploaded.url


async def test_training_lifecycle_manual(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.training_mode = "manual"
    destination, url = await _training_setup(replicate_service, replicate_emu)
    state = await replicate_service.start_training(
        TRAINER_VERSION, destination, {"input_images": url, "steps": 200, "trigger_word": "ZQX"}
    )
    assert isinstance(state, TrainingState)
    assert state.status == "starting" and not state.finished
    assert (state.step, state.total, state.version) == (None, None, None)

    await replicate_emu.advance_training(state.id, step=84)
    state = await replicate_service.get_training(state.id)
    assert (state.status, state.step, state.total) == ("processing", 84, 200)
    assert state.started_at is not None

    await replicate_emu.complete_training(state.id)
    state = await replicate_service.get_training(state.id)
    assert state.finished and state.status == "succeeded"
    assert (state.step, state.total) == (200, 200)
    assert state.version and state.version.startswith(f"{destination}:")
    assert parse_model_ref(state.version).version is not None
    assert state.weights and state.weights.endswith("trained_model.tar")
    assert state.completed_at is not None and state.predict_time is not None

    # The trained version is runnable by its full reference.
    result = await replicate_service.generate(state.version, "ZQX smiling")
    assert result.images


async def test_training_auto_mode(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    destination, url = await _training_setup(replicate_service, replicate_emu)
    state = await replicate_service.start_training(
        TRAINER_VERSION, destination, {"input_images": url, "steps": 100}
    )
    await replicate_emu.wait_for(lambda: replicate_emu.trainings[state.id].finished)
    state = await replicate_service.get_training(state.id)
    assert state.status == "succeeded"
    assert (state.step, state.total) == (100, 100)
    assert replicate_emu.counts["trainings_created"] == 1


async def test_training_with_non_zip_fails(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    destination, url = await _training_setup(replicate_service, replicate_emu, b"not a zip")
    state = await replicate_service.start_training(
        TRAINER_VERSION, destination, {"input_images": url}
    )
    await replicate_emu.wait_for(lambda: replicate_emu.trainings[state.id].finished)
    state = await replicate_service.get_training(state.id)
    assert state.status == "failed"
    assert state.error == ZIP_ERROR
    assert state.version is None


async def test_training_manual_failure(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.training_mode = "manual"
    destination, url = await _training_setup(replicate_service, replicate_emu)
    state = await replicate_service.start_training(
        TRAINER_VERSION, destination, {"input_images": url}
    )
    await replicate_emu.fail_training(state.id, "Out of memory " * 40)
    state = await replicate_service.get_training(state.id)
    assert state.status == "failed" and state.finished
    assert state.error and len(state.error) <= 300


async def test_cancel_training(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.training_mode = "manual"
    destination, url = await _training_setup(replicate_service, replicate_emu)
    state = await replicate_service.start_training(
        TRAINER_VERSION, destination, {"input_images": url}
    )
    await replicate_emu.advance_training(state.id, step=10)
    state = await replicate_service.cancel_training(state.id)
    assert state.status == "canceled" and state.finished
    assert replicate_emu.counts["trainings_canceled"] == 1


async def test_training_needs_existing_destination(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    with pytest.raises(ModelNotFoundError) as info:
        await replicate_service.start_training(
            TRAINER_VERSION,
            f"{replicate_emu.username}/missing",
            {"input_images": "https://x/y.zip"},
        )
    assert "destination does not exist" in str(info.value)
    assert replicate_emu.counts["trainings_created"] == 0


async def test_training_invalid_input(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    destination, url = await _training_setup(replicate_service, replicate_emu)
    with pytest.raises(InvalidInputError) as info:
        await replicate_service.start_training(
            TRAINER_VERSION, destination, {"input_images": url, "steps": 1}
        )
    assert "steps" in info.value.detail


async def test_training_refs_are_checked_locally(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    with pytest.raises(InvalidModelError):
        await replicate_service.start_training("ostris/flux-dev-lora-trainer", "a/b", {})
    with pytest.raises(InvalidModelError):
        await replicate_service.start_training(TRAINER_VERSION, "a/Bad Name", {})
    assert replicate_emu.requests == []


async def test_training_create_retried_after_429_only(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    destination, url = await _training_setup(replicate_service, replicate_emu)
    replicate_emu.rate_limit_next_create(retry_after=0, count=1)
    await replicate_service.start_training(TRAINER_VERSION, destination, {"input_images": url})
    assert replicate_emu.counts["trainings_created"] == 1

    replicate_emu.error_next("POST", r".*/trainings", 500, process=True)
    with pytest.raises(ReplicateUnavailable):
        await replicate_service.start_training(TRAINER_VERSION, destination, {"input_images": url})
    assert replicate_emu.counts["trainings_created"] == 2
    assert replicate_emu.request_count("POST", r".*/trainings") == 3


async def test_get_unknown_training(replicate_service: ReplicateService):
    with pytest.raises(NotFoundError) as info:
        await replicate_service.get_training("nope")
    assert not isinstance(info.value, ModelNotFoundError)


async def test_training_webhook_delivery_verifies_with_service_secret(
    replicate_service: ReplicateService,
    replicate_emu: ReplicateEmulator,
    webhook_receiver: WebhookReceiver,
):
    webhook_receiver.statuses = [500]  # the first delivery is retried
    destination, url = await _training_setup(replicate_service, replicate_emu)
    state = await replicate_service.start_training(
        TRAINER_VERSION,
        destination,
        {"input_images": url, "steps": 20},
        webhook=webhook_receiver.url,
    )
    assert replicate_emu.requests[-1][2]["webhook_events_filter"] == ["completed"]
    await webhook_receiver.wait_for(lambda: len(webhook_receiver.received) >= 2)

    secret = await replicate_service.webhook_secret()
    first, second = webhook_receiver.received[:2]
    assert first[0]["webhook-id"] == second[0]["webhook-id"]  # a retry keeps its id
    for headers, body in (first, second):
        verify_webhook(headers, body, secret)
    delivered = json.loads(second[1])
    assert delivered["id"] == state.id and delivered["status"] == "succeeded"
    assert delivered["output"]["version"].startswith(f"{destination}:")


# ----------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("logs", "expected"),
    [
        (None, None),
        ("", None),
        ("no progress here\n", None),
        ("flux_train_replicate:  42%|####      | 420/1000 [05:01<06:55, 1.40it/s]", (420, 1000)),
        (
            "Loading checkpoint shards: 100%|##########| 3/3 [00:02<00:00]\n"
            "flux_train_replicate:   0%|          | 0/1000 [00:00<?, ?it/s]\n"
            "flux_train_replicate:   1%|          | 10/1000 [00:07<11:40, 1.41it/s]\r"
            "flux_train_replicate:   2%|▏         | 20/1000 [00:14<11:33, 1.41it/s]",
            (20, 1000),
        ),
        (
            "flux_train_replicate:  99%|#########9| 990/1000\n"
            "Generating samples: 50%|#####     | 1/2 [00:01<00:01]\n",
            (990, 1000),
        ),
        ("Loading checkpoint shards:  67%|######6   | 2/3 [00:01<00:00]", (2, 3)),
        ("garbage 5/3 and 2024/01/02", None),
    ],
)
def test_parse_training_progress(logs: str | None, expected: tuple[int, int] | None):
    assert parse_training_progress(logs) == expected


def test_parse_model_ref():
    version = "0123456789abcdef" * 4
    assert parse_model_ref("black-forest-labs/flux-schnell").version is None
    ref = parse_model_ref(f"me/my_lora.v2:{version}")
    assert (ref.owner, ref.name, ref.version) == ("me", "my_lora.v2", version)
    assert str(ref) == f"me/my_lora.v2:{version}"
    assert ref.model == "me/my_lora.v2"
    for bad in ("", "x", "a/b/c", f"a/b:{version[:-1]}", "a/b:XYZ", "-a/b"):
        with pytest.raises(InvalidModelError):
            parse_model_ref(bad)


def test_sniff_content_type():
    assert sniff_content_type(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_content_type(b"\xff\xd8\xff\xe0....") == "image/jpeg"
    assert sniff_content_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_content_type(b"<html>") is None


async def test_find_and_resume_a_prediction_whose_create_answer_was_lost(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    since = datetime.now(UTC) - timedelta(seconds=1)
    await replicate_service.generate("black-forest-labs/flux-schnell", "other", {"seed": 1})
    replicate_emu.prediction_mode = "manual"
    task = asyncio.create_task(
        replicate_service.generate("black-forest-labs/flux-schnell", "lost", {"seed": 7})
    )
    job = await replicate_emu.wait_for(
        lambda: (
            replicate_emu.last_prediction
            if replicate_emu.last_prediction.input.get("prompt") == "lost"
            else None
        )
    )
    task.cancel()
    found = await replicate_service.find_predictions(prompt="lost", seed=7, since=since)
    assert found == [job.id]
    assert await replicate_service.find_predictions(prompt="lost", seed=8, since=since) == []
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert await replicate_service.find_predictions(prompt="lost", seed=7, since=later) == []
    await replicate_emu.complete_prediction(job.id)
    [found] = found
    result = await replicate_service.resume(found)
    assert result.prediction_id == job.id and len(result.images) == 1


# ----------------------------------------------------------------------- polling many


async def test_many_predictions_are_polled_with_one_listing(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    """Seven predictions at once, listed two a page: each gets its own images and seed,
    and the polls are listings (paged with the cursor), not one GET per prediction."""
    replicate_emu.prediction_latency = 0.3
    replicate_emu.list_page_size = 2
    prompts = [f"cat {i}" for i in range(7)]
    results = await asyncio.gather(
        *(replicate_service.generate(SCHNELL, p, {"seed": i}) for i, p in enumerate(prompts))
    )
    assert [r.seed for r in results] == list(range(7))
    by_id = {job.id: job for job in replicate_emu.predictions.values()}
    for prompt, result in zip(prompts, results, strict=True):
        assert by_id[result.prediction_id].input["prompt"] == prompt
        assert result.images and result.images[0].data.startswith(b"RIFF")
    listings = [p for m, p, _ in replicate_emu.requests if m == "GET" and p == "/v1/predictions"]
    gets = replicate_emu.request_count("GET", r"/v1/predictions/[^/]+")
    assert listings
    # Without listings each of the 7 would be polled about 0.3 / 0.02 = 15 times.
    assert gets < 7 * 3
    assert any("cursor=" in url for url in replicate_emu.query_strings("GET", "/v1/predictions"))


async def test_listing_outage_is_tolerated_then_all_finish(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.prediction_latency = 0.2
    replicate_emu.error_next("GET", r"/v1/predictions", 503, count=3)
    results = await asyncio.gather(
        *(replicate_service.generate(SCHNELL, f"dog {i}") for i in range(4))
    )
    assert all(r.images for r in results)
    assert replicate_emu.request_count("GET", r"/v1/predictions") >= 3


async def test_listing_outage_past_the_limit_fails_every_follower(
    replicate_emu: ReplicateEmulator,
):
    async with make_service(replicate_emu, outage_limit=0.2) as service:
        replicate_emu.prediction_mode = "manual"
        replicate_emu.error_next("GET", r"/v1/predictions(/[^/]+)?", 500, count=1000)
        answers = await asyncio.gather(
            *(service.generate(SCHNELL, f"owl {i}") for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(a, ReplicateUnavailable) for a in answers), answers
        assert all("Replicate" in a.user_message for a in answers)  # type: ignore[union-attr]


async def test_a_hung_poll_holds_up_only_its_prediction(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    replicate_emu.prediction_mode = "manual"
    slow = asyncio.create_task(replicate_service.generate(SCHNELL, "slow"))
    await replicate_emu.wait_for(lambda: replicate_emu.last_prediction is not None)
    slow_id = replicate_emu.last_prediction.id  # type: ignore[union-attr]
    replicate_emu.hang_next("GET", rf"/v1/predictions/{slow_id}")
    await replicate_emu.wait_for(
        lambda: replicate_emu.request_count("GET", rf"/v1/predictions/{slow_id}") >= 1
    )
    replicate_emu.prediction_mode = "auto"
    fast = await asyncio.wait_for(replicate_service.generate(SCHNELL, "fast"), 5)
    assert fast.images
    assert not slow.done()
    replicate_emu.release_hangs()
    await replicate_emu.complete_prediction(slow_id)
    assert (await asyncio.wait_for(slow, 10)).images


# ----------------------------------------------------------------------- prediction webhooks


async def test_a_webhooked_prediction_ends_with_its_delivery_not_a_poll(
    replicate_emu: ReplicateEmulator, webhook_receiver: WebhookReceiver
):
    async with make_service(replicate_emu, webhook_poll_interval=60) as service:
        replicate_emu.prediction_mode = "manual"
        task = asyncio.create_task(
            service.generate(SCHNELL, "a heron", webhook=webhook_receiver.url)
        )
        job = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
        assert job.webhook == webhook_receiver.url
        assert job.webhook_events == {"completed"}
        await replicate_emu.complete_prediction(job.id)
        await webhook_receiver.wait_for(lambda: webhook_receiver.received)
        assert not task.done()  # nothing polled it
        headers, body = webhook_receiver.received[-1]
        verify_webhook(headers, body, await service.webhook_secret())
        assert service.offer_prediction(json.loads(body)) is True
        result = await asyncio.wait_for(task, 5)
        assert result.prediction_id == job.id and result.images
        assert replicate_emu.request_count("GET", rf"/v1/predictions(/{job.id})?") == 0
        # A repeated delivery, or one for something not followed, changes nothing.
        assert service.offer_prediction(json.loads(body)) is False
        assert service.offer_prediction({"id": "not-followed", "status": "succeeded"}) is False


async def test_a_lost_prediction_webhook_is_made_up_for_by_a_rare_poll(
    replicate_emu: ReplicateEmulator, webhook_receiver: WebhookReceiver
):
    async with make_service(replicate_emu, webhook_poll_interval=0.3) as service:
        replicate_emu.prediction_latency = 0.05
        result = await asyncio.wait_for(
            service.generate(SCHNELL, "a stork", webhook=webhook_receiver.url), 5
        )
        assert result.images
        assert webhook_receiver.received  # delivered, but nobody handed it over
        gets = replicate_emu.request_count("GET", r"/v1/predictions(/[^/]+)?")
        assert 1 <= gets <= 2  # one poll after 0.3 s, not one every 0.02 s


async def test_a_webhook_that_beats_the_create_answer_is_kept_for_the_follower(
    replicate_emu: ReplicateEmulator, webhook_receiver: WebhookReceiver
):
    async with make_service(replicate_emu, webhook_poll_interval=60) as service:
        replicate_emu.prediction_mode = "manual"
        replicate_emu.hang_next("POST", OFFICIAL_CREATE, process=True)
        task = asyncio.create_task(
            service.generate(SCHNELL, "an egret", webhook=webhook_receiver.url)
        )
        job = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
        await replicate_emu.complete_prediction(job.id)
        await webhook_receiver.wait_for(lambda: webhook_receiver.received)
        _headers, body = webhook_receiver.received[-1]
        assert service.offer_prediction(json.loads(body)) is False  # not followed yet
        service.keep_early_delivery(json.loads(body))
        replicate_emu.release_hangs()
        result = await asyncio.wait_for(task, 5)
        assert result.prediction_id == job.id and result.images
        assert replicate_emu.request_count("GET", rf"/v1/predictions(/{job.id})?") == 0


def test_listing_rounds_slow_down_before_they_could_exceed_a_rate() -> None:
    """Few predictions: one GET each per poll_interval. Up to a page: a listing as often
    as list_poll_interval allows, at most 20 a second. More: a round every 0.1 s (the
    oldest page, or a sweep of every page at most 10 pages a second)."""
    service = ReplicateService("r8_test", poll_interval=0.5, list_poll_interval=0.01)
    poller = service._poller
    for followed, expected in [(2, 0.5), (3, 0.05), (100, 0.05), (101, 0.1), (4000, 0.1)]:
        poller._watched = {str(i): object() for i in range(followed)}  # type: ignore[misc]
        assert poller._interval() == pytest.approx(expected), followed


async def test_listings_stay_under_twenty_pages_a_second(
    replicate_emu: ReplicateEmulator, monkeypatch: pytest.MonkeyPatch
):
    """Eight pages followed, nothing ending: the oldest page and the sweeps together make
    at most 20 listing requests a second (30 take at least 1.1 s: one sweep of 8 pages
    may be in flight at either end)."""
    monkeypatch.setattr(poller_module, "LIST_PAGE_SIZE", 2)
    replicate_emu.list_page_size = 2
    replicate_emu.prediction_mode = "manual"
    async with make_service(replicate_emu) as service:
        tasks = [
            asyncio.create_task(service.generate(SCHNELL, f"elk {i}", {"seed": i}))
            for i in range(16)
        ]
        await replicate_emu.wait_for(lambda: len(replicate_emu.predictions) == 16 or None)
        start = len(replicate_emu.query_strings("GET", "/v1/predictions"))
        began = time.monotonic()
        await replicate_emu.wait_for(
            lambda: len(replicate_emu.query_strings("GET", "/v1/predictions")) >= start + 30
        )
        assert time.monotonic() - began >= (30 - 8) / 20
        for job in list(replicate_emu.predictions.values()):
            await replicate_emu.complete_prediction(job.id)
        assert all(r.images for r in await asyncio.gather(*tasks))


async def test_between_sweeps_the_oldest_predictions_are_listed_on_their_own_page(
    replicate_emu: ReplicateEmulator, monkeypatch: pytest.MonkeyPatch
):
    """More than a page followed: between sweeps of every page, one page of the oldest
    (those created up to the newest of them) is listed, so that the first to end are seen
    without paging past all the others; the sweep still finds the others."""
    monkeypatch.setattr(poller_module, "LIST_PAGE_SIZE", 3)
    replicate_emu.list_page_size = 3
    replicate_emu.prediction_mode = "manual"
    async with make_service(replicate_emu) as service:
        tasks = {
            f"fox {i}": asyncio.create_task(service.generate(SCHNELL, f"fox {i}", {"seed": i}))
            for i in range(9)
        }
        await replicate_emu.wait_for(lambda: len(replicate_emu.predictions) == 9 or None)
        jobs = sorted(replicate_emu.predictions.values(), key=lambda j: j.created_at)

        def windows() -> list[datetime]:
            return [
                datetime.fromisoformat(q.split("created_before=", 1)[1].replace("%3A", ":"))
                for q in replicate_emu.query_strings("GET", "/v1/predictions")
                if "created_before=" in q
            ]

        await replicate_emu.wait_for(lambda: windows() or None)
        assert any(jobs[2].created_at < bound <= jobs[3].created_at for bound in windows())
        await replicate_emu.complete_prediction(jobs[0].id)
        first = await tasks[jobs[0].input["prompt"]]
        assert first.prediction_id == jobs[0].id and first.images
        await replicate_emu.complete_prediction(jobs[-1].id)  # found by a sweep
        last = await tasks[jobs[-1].input["prompt"]]
        assert last.prediction_id == jobs[-1].id
        for job in jobs[1:-1]:
            await replicate_emu.complete_prediction(job.id)
        assert len(await asyncio.gather(*tasks.values())) == 9
