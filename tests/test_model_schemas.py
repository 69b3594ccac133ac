"""services.replicate.schemas.ModelSchemas: the cache on its own (a scripted fetch and
clock), then the real reader through the real client against the emulator."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
import replicate
from PIL import Image

from services.model_inputs import ModelInputs, check_options
from services.replicate import (
    InvalidModelError,
    ModelNotFoundError,
    ModelSchemas,
    ReplicateService,
    ReplicateUnavailable,
)
from tests.emulators.replicate import (
    FLUX_DEV,
    FLUX_SCHNELL,
    UPSCALER_MODEL,
    UPSCALER_VERSION,
    UPSCALER_VERSION_ID,
    ReplicateEmulator,
)

VERSION = "e" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedFetch:
    """Answers ModelInputs whose ``version`` counts the fetches of that model."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, model: str) -> ModelInputs:
        self.calls.append(model)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return ModelInputs(model=model, version=str(self.calls.count(model)))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fetch() -> ScriptedFetch:
    return ScriptedFetch()


@pytest.fixture
def schemas(fetch: ScriptedFetch, clock: Clock) -> ModelSchemas:
    return ModelSchemas(fetch, ttl=3600, max_entries=3, retry_after_failure=60, clock=clock)


# ----------------------------------------------------------------------- the cache


async def test_cached_until_the_ttl(schemas: ModelSchemas, fetch: ScriptedFetch, clock: Clock):
    assert (await schemas.inputs("o/n")).version == "1"
    clock.now += 3599
    assert (await schemas.inputs(" o/n ")).version == "1"  # same key once parsed
    clock.now += 1
    assert (await schemas.inputs("o/n")).version == "2"
    assert fetch.calls == ["o/n", "o/n"]


async def test_versions_never_expire(schemas: ModelSchemas, fetch: ScriptedFetch, clock: Clock):
    await schemas.inputs(f"o/n:{VERSION}")
    clock.now += 10 * 86400
    await schemas.inputs(f"o/n:{VERSION}")
    assert fetch.calls == [f"o/n:{VERSION}"]


async def test_a_failure_keeps_the_last_good_value(
    schemas: ModelSchemas, fetch: ScriptedFetch, clock: Clock
):
    await schemas.inputs("o/n")
    clock.now += 3600
    fetch.fail = ReplicateUnavailable("down")
    assert (await schemas.inputs("o/n")).version == "1"
    clock.now += 59  # not tried again at once
    assert (await schemas.inputs("o/n")).version == "1"
    assert len(fetch.calls) == 2
    clock.now += 1
    fetch.fail = None
    assert (await schemas.inputs("o/n")).version == "3"  # the third fetch


async def test_a_failure_without_a_value_is_raised(schemas: ModelSchemas, fetch: ScriptedFetch):
    fetch.fail = ModelNotFoundError("404")
    with pytest.raises(ModelNotFoundError):
        await schemas.inputs("o/missing")
    with pytest.raises(ModelNotFoundError):
        await schemas.inputs("o/missing")
    assert len(fetch.calls) == 2
    assert schemas.cached("o/missing") is None


async def test_bad_references(schemas: ModelSchemas, fetch: ScriptedFetch):
    with pytest.raises(InvalidModelError):
        await schemas.inputs("not a model")
    assert schemas.cached("not a model") is None
    assert fetch.calls == []


async def test_bounded_least_recently_used_first(schemas: ModelSchemas, fetch: ScriptedFetch):
    for name in ("o/a", "o/b", "o/c"):
        await schemas.inputs(name)
    await schemas.inputs("o/a")  # used again: o/b is now the oldest
    await schemas.inputs("o/d")
    assert len(schemas) == 3
    assert schemas.cached("o/b") is None
    assert schemas.cached("o/a") is not None and schemas.cached("o/d") is not None


async def test_concurrent_reads_share_one_fetch(schemas: ModelSchemas, fetch: ScriptedFetch):
    fetch.gate = asyncio.Event()
    readers = [asyncio.create_task(schemas.inputs("o/n")) for _ in range(5)]
    await asyncio.sleep(0)
    fetch.gate.set()
    results = await asyncio.gather(*readers)
    assert fetch.calls == ["o/n"]
    assert {r.version for r in results} == {"1"}
    assert schemas._locks == {}


async def test_a_cancelled_reader_does_not_break_the_others(
    schemas: ModelSchemas, fetch: ScriptedFetch
):
    fetch.gate = asyncio.Event()
    first = asyncio.create_task(schemas.inputs("o/n"))
    await asyncio.sleep(0)
    second = asyncio.create_task(schemas.inputs("o/n"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    fetch.gate.set()
    assert (await second).model == "o/n"
    assert first.cancelled()
    assert schemas._locks == {}


async def test_cached_and_forget(schemas: ModelSchemas, fetch: ScriptedFetch, clock: Clock):
    await schemas.inputs("o/n")
    clock.now += 99999
    assert schemas.cached("o/n") is not None  # however old
    schemas.forget("o/n")
    assert schemas.cached("o/n") is None
    await schemas.inputs("o/x")
    schemas.forget()
    assert len(schemas) == 0


def test_needs_room() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        ModelSchemas(ScriptedFetch(), max_entries=0)


# ----------------------------------------------------------------------- through the emulator


def test_the_client_still_has_the_request_method_we_use() -> None:
    """ModelInputs are read with replicate.Client._async_request (the client's Model drops
    is_official): an upgrade that removes it must fail here, loudly."""
    assert callable(getattr(replicate.Client, "_async_request", None))


async def test_reads_official_and_community_models(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    schnell = await replicate_service.model_inputs(FLUX_SCHNELL)
    assert schnell.official is True and schnell.run_ref == FLUX_SCHNELL
    assert schnell.max_outputs == 4 and schnell.takes_image is None
    assert schnell.version == replicate_emu.models[FLUX_SCHNELL].latest_version.id

    dev = await replicate_service.schemas.inputs(FLUX_DEV)
    assert dev.takes_image == "image" and dev.strength_input == "prompt_strength"

    upscaler = await replicate_service.schemas.inputs(UPSCALER_MODEL)
    assert upscaler.official is False and upscaler.run_ref == UPSCALER_VERSION
    assert not upscaler.output_is_list and upscaler.takes_image == "image"


async def test_reads_a_version(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    model = replicate_emu.add_model(replicate_emu.username, "face", with_version=True)
    ref = f"{model.ref}:{model.latest_version.id}"
    inputs = await replicate_service.schemas.inputs(ref)
    assert inputs.has_lora_scale and inputs.takes_image == "image"
    assert inputs.version == model.latest_version.id and inputs.run_ref == ref
    assert replicate_emu.request_count("GET", f"/v1/models/{model.ref}/versions/[0-9a-f]+") == 1


async def test_cached_through_the_service(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    for _ in range(3):
        await replicate_service.schemas.inputs(FLUX_SCHNELL)
    assert replicate_emu.request_count("GET", f"/v1/models/{FLUX_SCHNELL}") == 1


async def test_an_outage_keeps_the_last_good_schema(replicate_emu: ReplicateEmulator):
    service = ReplicateService(
        replicate_emu.token, base_url=replicate_emu.base_url, schema_ttl=0, request_timeout=5
    )
    try:
        first = await service.schemas.inputs(FLUX_DEV)
        replicate_emu.error_next("GET", f"/v1/models/{FLUX_DEV}", 500)
        assert await service.schemas.inputs(FLUX_DEV) == first
        assert replicate_emu.request_count("GET", f"/v1/models/{FLUX_DEV}") == 2
    finally:
        await service.aclose()


async def test_unknown_models(replicate_service: ReplicateService):
    with pytest.raises(ModelNotFoundError):
        await replicate_service.schemas.inputs("nobody/nothing")
    with pytest.raises(ModelNotFoundError):
        await replicate_service.schemas.inputs(f"{FLUX_DEV}:{VERSION}")


async def test_check_then_run_the_upscaler(
    replicate_service: ReplicateService, replicate_emu: ReplicateEmulator
):
    """The way a caller uses them together: read, check, run by run_ref."""
    buffer = io.BytesIO()
    Image.new("RGB", (20, 12), (10, 200, 10)).save(buffer, format="PNG")
    upscaler = await replicate_service.schemas.inputs(UPSCALER_MODEL)
    options = {
        upscaler.takes_image or "image": "data:image/png;base64,"
        + base64.b64encode(buffer.getvalue()).decode(),
        "scale": 2,
    }
    assert check_options(upscaler, options, complete=True) == []
    result = await replicate_service.run(upscaler.run_ref, options)
    [image] = result.images
    with Image.open(io.BytesIO(image.data)) as out:
        assert out.size == (40, 24)
    assert replicate_emu.last_prediction.version == UPSCALER_VERSION_ID
    assert replicate_emu.received_image() == buffer.getvalue()
