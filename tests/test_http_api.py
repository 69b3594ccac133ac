"""The HTTP API end to end: the real web server and the real replicate client against the
Replicate emulator, every answer validated against ``api/openapi.json``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from api import OPENAPI_PATH, api_user_key, bodies
from api.routes.health import PROBES_KEY
from bot import BotApp
from services.replicate import ReplicateService
from services.settings import load_settings
from services.store import NewGeneration, open_store
from tests.emulators.discord import DiscordEmulator
from tests.emulators.replicate import NSFW_OFFICIAL, TRAINER_VERSION, ReplicateEmulator
from tests.emulators.spec import OpenAPIRequest, OpenAPIResponse
from tests.harness import BotHarness, BotProcess
from tests.helpers import zips
from tests.helpers.ports import free_port
from tests.helpers.store import wait_for_generation

TOKEN = "api-test-token-0123456789"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- spec


@cache
def spec() -> OpenAPI:
    """Our own document, checked by the OpenAPI validator on load."""
    doc = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    config = Config(extra_media_type_deserializers={"application/problem+json": json.loads})
    return OpenAPI.from_dict(doc, config=config)


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def detail(self) -> str:
        assert self.content_type == "application/problem+json", (self.status, self.body[:300])
        return str(self.json()["detail"])


def assert_documented(method: str, path: str, answer: Answer) -> None:
    """The answer is one the document describes for this route (status, type, body)."""
    request = OpenAPIRequest(
        host_url="http://localhost",
        path=path,
        method=method.lower(),
        body=None,
        content_type="application/json",
        parameters=RequestParameters(query=ImmutableMultiDict(), header=Headers()),
    )
    response = OpenAPIResponse(
        answer.status, answer.content_type, dict(answer.headers), answer.body
    )
    errors = list(spec().iter_response_errors(request, response))
    assert not errors, f"{method} {path} -> {answer.status}: {[repr(e) for e in errors]}"


# --------------------------------------------------------------------------- client


class Api:
    """A client of one running web server that checks every answer against the document."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.http = http

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = TOKEN,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        documented: bool = True,
    ) -> Answer:
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        async with self.http.request(
            method, self.base_url + path, json=json_body, data=data, headers=sent
        ) as response:
            answer = Answer(response.status, dict(response.headers), await response.read())
        if answer.status >= 400 and path != "/healthz":  # /healthz: its own body on 503
            assert answer.content_type == "application/problem+json", answer
            assert answer.json()["status"] == answer.status
        if documented:
            template = re.sub(r"^/image/train/[^/?]+", "/image/train/{id}", path)
            assert_documented(method, template.split("?")[0], answer)
        return answer

    async def generate(self, **body: Any) -> Answer:
        return await self.call("POST", "/image/generate", json_body=body)

    async def train_upload(
        self, zip_data: bytes, token: str | None = TOKEN, **fields: str
    ) -> Answer:
        form = aiohttp.FormData()
        form.add_field("file", zip_data, filename="photos.zip", content_type="application/zip")
        for name, value in fields.items():
            form.add_field(name, value)
        return await self.call("POST", "/image/train", data=form, token=token)

    async def train_file(self, **body: Any) -> Answer:
        return await self.call("POST", "/image/train", json_body=body)


def api_env(replicate_emu: ReplicateEmulator, data_dir: Path, **overrides: str) -> dict[str, str]:
    """Settings of the web server alone (no DISCORD_TOKEN), wired to the emulator."""
    env = {
        "REPLICATE_API_TOKEN": replicate_emu.token,
        "REPLICATE_BASE_URL": replicate_emu.base_url,
        "DATABASE_URL": f"sqlite:///{data_dir / 'bot.sqlite3'}",
        "TRAINER_VERSION": TRAINER_VERSION,
        "GENERATE_COOLDOWN_SECONDS": "0",
        "LOG_LEVEL": "DEBUG",
        "SHUTDOWN_GRACE_SECONDS": "0.5",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": "0",
        "API_TOKEN": TOKEN,
        "TRAIN_DATA_DIR": str(data_dir / "train"),
        "TRAINING_POLL_SECONDS": "0.05",
    }
    env.update(overrides)
    return env


class ApiServer:
    """``python bot.py --http-only`` in-process (BotApp with ``http_only``)."""

    def __init__(
        self, replicate_emu: ReplicateEmulator, data_dir: Path, database_url: str | None = None
    ) -> None:
        self.emu = replicate_emu
        self.data_dir = data_dir
        self.database_url = database_url or f"sqlite:///{data_dir / 'bot.sqlite3'}"
        self.app: BotApp | None = None
        self.http: aiohttp.ClientSession | None = None

    async def start(self, **overrides: str) -> Api:
        env = api_env(self.emu, self.data_dir, **{"DATABASE_URL": self.database_url, **overrides})
        settings = load_settings(env, env_file=None, require_discord=False)
        self.app = BotApp(settings, http_only=True)
        await self.app.start()
        assert self.app.web is not None
        self.http = aiohttp.ClientSession()
        return Api(f"http://127.0.0.1:{self.app.web.port}", self.http)

    @property
    def services(self) -> Any:
        assert self.app is not None and self.app.services is not None
        return self.app.services

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.app is not None:
            await self.app.close()


@pytest.fixture
async def api(server: ApiServer) -> Api:
    return await server.start()


def zip_bytes(tmp_path: Path, n: int = 3) -> bytes:
    return zips.valid_training_zip(tmp_path / f"photos-{n}.zip", n=n).read_bytes()


def nothing_created(replicate_emu: ReplicateEmulator) -> bool:
    counts = replicate_emu.counts
    return counts["files_created"] == counts["models_created"] == counts["trainings_created"] == 0


# --------------------------------------------------------------------------- open routes


async def test_ping_healthz_and_openapi_need_no_token(api: Api) -> None:
    ping = await api.call("GET", "/ping", token=None)
    assert (ping.status, ping.body, ping.content_type) == (200, b"pong", "text/plain")
    health = await api.call("GET", "/healthz", token=None)
    assert health.status == 200
    assert health.json() == {
        "store": True,
        "replicate": True,
        "discord": "not running",
        "status": "ok",
    }
    document = await api.call("GET", "/openapi.json", token=None)
    assert document.status == 200 and document.content_type == "application/json"
    assert document.json() == json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    paths = document.json()["paths"]
    assert {"/ping", "/image/generate", "/image/train", "/image/train/{id}"} <= set(paths)


async def test_healthz_is_503_when_replicate_is_down(
    api: Api, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.error_next("GET", "/v1/account", status=500, count=10)
    health = await api.call("GET", "/healthz", token=None)
    assert health.status == 503
    assert health.json()["replicate"] is False and health.json()["status"] == "degraded"


async def test_healthz_probes_at_most_once_per_interval(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    """200 requests at once cost one call to Replicate; a failed probe is reported until
    the next one, which waits for the interval whatever the request rate."""
    api = await server.start()
    assert server.app is not None and server.app.web is not None
    probes = server.app.web.app[PROBES_KEY]
    assert probes.interval == 10.0
    now = [1000.0]
    probes.clock = lambda: now[0]

    def account_calls() -> int:
        return replicate_emu.request_count("GET", "/v1/account")

    before = account_calls()
    answers = await asyncio.gather(
        *(api.call("GET", "/healthz", token=None, documented=False) for _ in range(200))
    )
    assert {answer.status for answer in answers} == {200}
    assert account_calls() - before == 1 and probes.probes == 1

    replicate_emu.error_next("GET", "/v1/account", status=500, count=100)
    now[0] += 9.9
    assert (await api.call("GET", "/healthz", token=None)).status == 200  # still fresh
    assert account_calls() - before == 1

    now[0] += 0.1
    failed = await asyncio.gather(*(api.call("GET", "/healthz", token=None) for _ in range(50)))
    assert {answer.status for answer in failed} == {503}
    assert {answer.json()["replicate"] for answer in failed} == {False}
    assert probes.probes == 2
    calls = account_calls()
    now[0] += 5
    assert (await api.call("GET", "/healthz", token=None)).status == 503
    assert account_calls() == calls and probes.probes == 2


async def test_unknown_route_and_wrong_method_are_problems(api: Api) -> None:
    missing = await api.call("GET", "/nowhere", documented=False)
    assert missing.status == 404 and "/openapi.json" in missing.detail
    wrong = await api.call("GET", "/image/generate", documented=False)
    assert wrong.status == 405 and "POST" in wrong.headers["Allow"]


# --------------------------------------------------------------------------- auth

IMAGE_ROUTES = [
    ("POST", "/image/generate"),
    ("POST", "/image/train"),
    ("GET", "/image/train/abc"),
]


@pytest.mark.parametrize(("method", "path"), IMAGE_ROUTES)
async def test_image_routes_need_the_token(
    api: Api, replicate_emu: ReplicateEmulator, method: str, path: str
) -> None:
    body = {"prompt": "a cat"} if path == "/image/generate" else None
    missing = await api.call(method, path, token=None, json_body=body)
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await api.call(method, path, token=TOKEN + "x", json_body=body)
    assert wrong.status == 401 and "invalid_token" in wrong.headers["WWW-Authenticate"]
    basic = await api.call(
        method, path, token=None, json_body=body, headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert basic.status == 401
    assert replicate_emu.counts["predictions_created"] == 0
    assert nothing_created(replicate_emu)
    right = await api.call(method, path, json_body=body)
    assert right.status != 401


async def raw_exchange(api: Api, request: bytes) -> bytes:
    """Send bytes as they are (what aiohttp's client would refuse); return the answer's head."""
    host, port = api.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def test_token_with_odd_bytes_is_refused_not_crashed(api: Api) -> None:
    head = await raw_exchange(
        api,
        b"GET /image/train/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xc3\xa9\xff\xfe\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 401"), head


async def test_api_is_disabled_without_api_token(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(API_TOKEN="")
    for method, path in IMAGE_ROUTES:
        answer = await api.call(method, path, json_body={"prompt": "a cat"})
        assert answer.status == 503
        assert answer.detail == "HTTP API disabled: set API_TOKEN"
    assert (await api.call("GET", "/ping", token=None)).status == 200
    assert replicate_emu.counts["predictions_created"] == 0


# --------------------------------------------------------------------------- generate


async def test_generate_returns_the_image_with_seed_and_ids(
    api: Api, server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    answer = await api.generate(prompt="a red fox", aspect_ratio="16:9", seed=1234)
    assert answer.status == 200, answer.body[:300]
    assert answer.content_type == "image/png" and answer.body.startswith(PNG_MAGIC)
    assert answer.headers["X-Seed"] == "1234"
    prediction = replicate_emu.last_prediction
    assert answer.headers["X-Prediction-Id"] == prediction.id
    assert prediction.input["prompt"] == "a red fox"
    assert prediction.input["aspect_ratio"] == "16:9"
    stored = await server.services.store.get_generation(answer.headers["X-Generation-Id"])
    assert stored.source == "api" and stored.status == "succeeded"
    assert stored.user_key == api_user_key(TOKEN) and TOKEN not in stored.user_key
    assert stored.prediction_id == prediction.id and stored.seed == 1234


async def test_generate_without_seed_reports_the_one_used(
    api: Api, replicate_emu: ReplicateEmulator
) -> None:
    answer = await api.generate(prompt="a lighthouse", model="black-forest-labs/flux-schnell")
    assert answer.status == 200
    assert answer.headers["X-Seed"] == str(replicate_emu.last_prediction.input["seed"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "x" * 1001}, "too long"),
        ({"prompt": "a cat", "model": "someone/nothing"}, "Unknown model"),
        ({"prompt": "a cat", "aspect_ratio": "5:1"}, "aspect_ratio"),
        ({"prompt": "a cat", "seed": -1}, "seed"),
        ({"prompt": "a cat", "seed": 2**32}, "seed"),
        ({"prompt": "a cat", "seed": True}, "seed"),
        ({"prompt": "a cat", "seed": "12"}, "seed"),
        ({"prompt": 12}, "prompt"),
        ({"prompt": "a cat", "count": 2}, "Unknown field"),
        ({}, "Missing required field(s): prompt"),
        ([1, 2], "JSON object"),
    ],
)
async def test_generate_refuses_invalid_input(
    api: Api, replicate_emu: ReplicateEmulator, body: Any, expected: str
) -> None:
    answer = await api.call("POST", "/image/generate", json_body=body)
    assert answer.status == 422
    assert expected in answer.detail
    assert replicate_emu.counts["predictions_created"] == 0


async def test_generate_refuses_malformed_bodies(api: Api) -> None:
    broken = await api.call(
        "POST",
        "/image/generate",
        data=b'{"prompt": ',
        headers={"Content-Type": "application/json"},
    )
    assert broken.status == 400 and "not valid JSON" in broken.detail
    text = await api.call("POST", "/image/generate", data=b"prompt=a cat")
    assert text.status == 415


async def test_oversized_bodies_are_refused(api: Api) -> None:
    big = await api.generate(prompt="x" * (bodies.MAX_JSON_BODY + 10))
    assert big.status == 413

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    chunked = await api.call(
        "POST", "/image/generate", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status == 413


async def test_generate_daily_quota_and_cooldown_are_per_token(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(GENERATIONS_PER_USER_PER_DAY="1")
    assert (await api.generate(prompt="one")).status == 200
    refused = await api.generate(prompt="two")
    assert refused.status == 429 and "for today" in refused.detail
    assert int(refused.headers["Retry-After"]) > 0
    assert replicate_emu.counts["predictions_created"] == 1


async def test_generate_cooldown(server: ApiServer) -> None:
    api = await server.start(GENERATE_COOLDOWN_SECONDS="60")
    assert (await api.generate(prompt="one")).status == 200
    refused = await api.generate(prompt="two")
    assert refused.status == 429 and "Slow down" in refused.detail
    assert 0 < int(refused.headers["Retry-After"]) <= 60


async def test_a_bad_body_is_422_whatever_the_cooldown(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    """The whole body is checked before the limits: a caller in its cooldown still learns
    what is wrong with the request, not just to wait."""
    api = await server.start(GENERATE_COOLDOWN_SECONDS="3600")
    assert (await api.generate(prompt="one")).status == 200
    bad = {
        "prompt": {"prompt": "   "},
        "seed": {"prompt": "x", "seed": -1},
        "aspect_ratio": {"prompt": "x", "aspect_ratio": "5:5"},
        "model": {"prompt": "x", "model": "not a model"},
        "colour": {"prompt": "x", "colour": "red"},
    }
    for name, body in bad.items():
        answer = await api.generate(**body)
        assert answer.status == 422 and name in answer.detail, (name, answer)
    assert (await api.generate(prompt="two")).status == 429
    assert replicate_emu.counts["predictions_created"] == 1


@pytest.mark.parametrize("digits", [4301, 5000, 60000])
async def test_a_huge_seed_is_422_naming_seed(api: Api, digits: int) -> None:
    raw = b'{"prompt": "x", "seed": ' + b"9" * digits + b"}"
    answer = await api.call(
        "POST", "/image/generate", data=raw, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 422 and "`seed`" in answer.detail, answer
    prompt = await api.call(
        "POST",
        "/image/generate",
        data=b'{"prompt": ' + b"1" * 5000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert prompt.status == 422 and "`prompt`" in prompt.detail


async def test_generate_safety_filter_and_model_failure(
    api: Api, server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    replicate_emu.fail_next_prediction(NSFW_OFFICIAL)
    blocked = await api.generate(prompt="something")
    assert blocked.status == 422 and "safety filter" in blocked.detail
    replicate_emu.fail_next_prediction("CUDA out of memory")
    failed = await api.generate(prompt="something else")
    assert failed.status == 502 and "CUDA out of memory" in failed.detail
    replicate_emu.error_next("POST", r"/v1/models/.+/predictions", status=503)
    down = await api.generate(prompt="third")
    assert down.status == 503 and down.headers.get("Retry-After")


async def test_generate_with_a_model_trained_through_the_api(
    api: Api, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    started = await api.train_upload(
        zip_bytes(tmp_path), new_model_name="my-fox", trigger_word="FOXY", steps="100"
    )
    assert started.status == 201
    training_id = started.json()["id"]
    await replicate_emu.wait_for(lambda: replicate_emu.trainings[training_id].finished)
    done = await api.call("GET", f"/image/train/{training_id}")
    assert done.json()["status"] == "succeeded"
    answer = await api.generate(prompt="in the snow", model=f"{replicate_emu.username}/my-fox")
    assert answer.status == 200
    assert replicate_emu.last_prediction_input["prompt"] == "FOXY in the snow"


async def test_unexpected_error_is_a_500_problem_without_internals(
    api: Api, server: ApiServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(model: str | None, guild_id: int | None) -> None:
        raise RuntimeError("internal detail 42")

    monkeypatch.setattr(server.services.generations.models, "resolve", broken)
    with caplog.at_level(logging.ERROR, logger="api.problems"):
        answer = await api.generate(prompt="a cat")
    assert answer.status == 500
    assert "internal detail 42" not in answer.body.decode() and "Traceback" not in answer.detail
    assert any(r.exc_info and "internal detail 42" in str(r.exc_info[1]) for r in caplog.records)


async def test_a_slow_client_is_cut_off(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodies, "BODY_TIMEOUT", 0.2)
    head = await raw_exchange(
        api,
        b"POST /image/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"prompt": ',
    )
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"application/problem+json" in head


# --------------------------------------------------------------------------- train


async def test_train_is_503_when_the_zip_check_would_wait_long(
    server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    api = await server.start(MAX_CONCURRENT_ZIP_CHECKS="1")
    gate = server.services.trainings.zip_checks
    gate.typical_seconds = 60.0
    held, release = asyncio.Event(), asyncio.Event()

    async def another_check() -> None:
        async with gate.turn():
            held.set()
            await release.wait()

    holder = asyncio.create_task(another_check())
    await held.wait()
    refused = await api.train_upload(zip_bytes(tmp_path), new_model_name="m", trigger_word="TOK")
    assert refused.status == 503 and "waiting to be checked" in refused.detail
    assert refused.headers["Retry-After"] == "60"
    assert nothing_created(replicate_emu)
    release.set()
    await holder
    started = await api.train_upload(zip_bytes(tmp_path), new_model_name="m", trigger_word="TOK")
    assert started.status == 201


async def test_train_upload_happy_path_and_state(
    api: Api, server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    replicate_emu.training_mode = "manual"
    answer = await api.train_upload(
        zip_bytes(tmp_path),
        new_model_name="my-dog",
        trigger_word="RUFUS",
        owner=replicate_emu.username,
        steps="200",
    )
    assert answer.status == 201, answer.body[:500]
    body = answer.json()
    job = replicate_emu.last_training
    assert body["id"] == job.id and answer.headers["Location"] == f"/image/train/{job.id}"
    assert body["model"] == "ostris/flux-dev-lora-trainer"
    assert body["version"] == TRAINER_VERSION.rpartition(":")[2]
    assert body["destination"] == f"{replicate_emu.username}/my-dog"
    assert body["status"] == "starting" and body["source"] == "api"
    assert body["input"]["trigger_word"] == "RUFUS" and body["input"]["steps"] == 200
    assert body["urls"]["get"].endswith(f"/v1/trainings/{job.id}")
    assert job.input["trigger_word"] == "RUFUS" and job.input["steps"] == 200
    assert replicate_emu.models[f"{replicate_emu.username}/my-dog"].visibility == "private"
    stored = await server.services.store.get_training(body["local_id"])
    assert stored.source == "api" and stored.channel_id is None
    assert stored.user_key == api_user_key(TOKEN)

    await replicate_emu.advance_training(job.id, step=50)
    running = await api.call("GET", f"/image/train/{job.id}")
    assert running.status == 200
    assert running.json()["status"] == "processing"
    assert running.json()["progress"] == {"step": 50, "total": 200}
    await replicate_emu.complete_training(job.id)
    done = await api.call("GET", f"/image/train/{body['local_id']}")
    assert done.json()["status"] == "succeeded"
    assert done.json()["output"]["version"] == replicate_emu.trainings[job.id].output["version"]
    assert "completed_at" in done.json()


async def test_train_from_a_file_in_train_data_dir(
    api: Api, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    folder = tmp_path / "train" / "dogs"
    folder.mkdir()
    (folder / "rufus.zip").write_bytes(zip_bytes(tmp_path))
    answer = await api.train_file(
        file_name="dogs/rufus.zip",
        new_model_name="rufus",
        owner=replicate_emu.username,
        trigger_word="RUFUS",
    )
    assert answer.status == 201, answer.body[:500]
    assert replicate_emu.last_training.destination == f"{replicate_emu.username}/rufus"
    assert replicate_emu.last_training.input["steps"] == 1000


@pytest.mark.parametrize(
    ("file_name", "status"),
    [
        ("../secret.zip", 422),
        ("dogs/../../secret.zip", 422),
        ("/etc/passwd", 422),
        ("..", 422),
        ("dogs\\..\\..\\secret.zip", 422),
        ("", 422),
        ("link.zip", 422),
        ("linked-dir/secret.zip", 422),
        ("inner-link.zip", 422),
        ("dogs", 422),
        ("missing.zip", 404),
    ],
)
async def test_file_name_stays_inside_train_data_dir(
    api: Api, replicate_emu: ReplicateEmulator, tmp_path: Path, file_name: str, status: int
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    good = zip_bytes(tmp_path)
    (outside / "secret.zip").write_bytes(good)
    (tmp_path / "secret.zip").write_bytes(good)
    base = tmp_path / "train"
    (base / "dogs").mkdir()
    (base / "dogs" / "ok.zip").write_bytes(good)
    (base / "link.zip").symlink_to(outside / "secret.zip")
    (base / "linked-dir").symlink_to(outside, target_is_directory=True)
    (base / "inner-link.zip").symlink_to(base / "dogs" / "ok.zip")
    answer = await api.train_file(file_name=file_name, new_model_name="sneaky", trigger_word="TOK")
    assert answer.status == status, answer.body
    assert "TRAIN_DATA_DIR" in answer.detail or "link" in answer.detail or "file" in answer.detail
    assert str(tmp_path) not in answer.detail
    assert nothing_created(replicate_emu)


BAD_ZIPS = {
    "not a zip": (b"this is not a zip at all", "not a zip"),
    "traversal": (zips.zip_bytes([zips.traversal_entry()]), "leave the archive"),
    "symlink": (zips.zip_bytes([zips.symlink_entry()]), "link"),
    "no images": (zips.zip_bytes([zips.caption_entry("only.txt")]), "image"),
}


@pytest.mark.parametrize("kind", list(BAD_ZIPS))
async def test_bad_zip_is_refused_with_the_bots_message(
    api: Api, replicate_emu: ReplicateEmulator, kind: str
) -> None:
    data, expected = BAD_ZIPS[kind]
    answer = await api.train_upload(data, new_model_name="bad-zip", trigger_word="TOK")
    assert answer.status == 422
    assert "can't be used for training" in answer.detail
    assert expected in answer.detail.lower()
    assert nothing_created(replicate_emu)


async def test_oversized_upload_is_refused(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(MAX_TRAIN_ZIP_MB="1")
    too_big = b"PK\x03\x04" + os.urandom(2 * 1024 * 1024)
    answer = await api.train_upload(too_big, new_model_name="big", trigger_word="TOK")
    assert answer.status == 413 and "1 MB" in answer.detail

    async def streamed() -> AsyncIterator[bytes]:
        head = (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
            b"Content-Type: application/zip\r\n\r\n"
        )
        yield head
        for _ in range(40):
            yield b"\0" * 64 * 1024

    chunked = await api.call(
        "POST",
        "/image/train",
        data=streamed(),
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert chunked.status == 413
    assert nothing_created(replicate_emu)


@pytest.mark.parametrize(
    ("fields", "status", "expected"),
    [
        ({"new_model_name": "My_Model-", "trigger_word": "TOK"}, 422, "lowercase letters"),
        ({"new_model_name": "ok", "trigger_word": "no spaces"}, 422, "Trigger word"),
        ({"new_model_name": "ok", "trigger_word": "TOK", "steps": "50"}, 422, "steps"),
        ({"new_model_name": "ok", "trigger_word": "TOK", "steps": "many"}, 422, "steps"),
        ({"trigger_word": "TOK"}, 422, "new_model_name"),
        ({"new_model_name": "ok", "trigger_word": "TOK", "owner": "someone"}, 403, "account"),
        ({"new_model_name": "ok", "trigger_word": "TOK", "extra": "1"}, 422, "Unknown part"),
    ],
)
async def test_train_form_is_checked(
    api: Api,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
    fields: dict[str, str],
    status: int,
    expected: str,
) -> None:
    answer = await api.train_upload(zip_bytes(tmp_path), **fields)
    assert answer.status == status, answer.body
    assert expected in answer.detail
    assert replicate_emu.counts["trainings_created"] == 0


async def test_train_without_file_part_or_with_wrong_type(api: Api) -> None:
    form = aiohttp.FormData()
    form.add_field("new_model_name", "ok")
    form.add_field("trigger_word", "TOK")
    form.add_field("_", b"", filename="x", content_type="application/zip")  # force multipart
    no_file = await api.call("POST", "/image/train", data=form)
    assert no_file.status == 422
    wrong = await api.call(
        "POST", "/image/train", data=b"x", headers={"Content-Type": "application/zip"}
    )
    assert wrong.status == 415
    json_owner = await api.train_file(
        file_name="x.zip", new_model_name="ok", trigger_word="TOK", owner="intruder"
    )
    assert json_owner.status == 403


async def test_training_quota_is_per_token(
    server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    api = await server.start(TRAININGS_PER_USER_PER_DAY="1")
    replicate_emu.training_mode = "manual"
    first = await api.train_upload(zip_bytes(tmp_path), new_model_name="one", trigger_word="TOK")
    assert first.status == 201
    second = await api.train_upload(zip_bytes(tmp_path), new_model_name="two", trigger_word="TOK")
    assert second.status == 429 and "for today" in second.detail
    assert replicate_emu.counts["trainings_created"] == 1


async def test_training_of_someone_else_is_invisible(
    api: Api, server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    answer = await api.call("GET", "/image/train/nope")
    assert answer.status == 404
    started = await api.train_upload(zip_bytes(tmp_path), new_model_name="mine", trigger_word="TOK")
    local_id = started.json()["local_id"]
    await server.services.store.update_training(local_id, user_key="discord:1")
    hidden = await api.call("GET", f"/image/train/{started.json()['id']}")
    assert hidden.status == 404


async def test_cancel_a_training_then_again(
    api: Api, server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    replicate_emu.training_mode = "manual"
    started = await api.train_upload(zip_bytes(tmp_path), new_model_name="stop", trigger_word="TOK")
    job = replicate_emu.last_training
    await replicate_emu.advance_training(job.id, step=10)
    canceled = await api.call("POST", f"/image/train/{job.id}/cancel")
    assert canceled.status == 200 and canceled.json()["status"] == "canceled"
    assert replicate_emu.trainings[job.id].status == "canceled"
    assert replicate_emu.counts["trainings_canceled"] == 1
    stored = await server.services.store.get_training(started.json()["local_id"])
    assert stored.status == "canceled"
    again = await api.call("POST", f"/image/train/{started.json()['local_id']}/cancel")
    assert again.status == 200 and again.json()["status"] == "canceled"
    assert replicate_emu.counts["trainings_canceled"] == 1  # nothing to stop twice


async def test_cancel_refuses_others_and_strangers(
    api: Api, server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    replicate_emu.training_mode = "manual"
    started = await api.train_upload(zip_bytes(tmp_path), new_model_name="keep", trigger_word="TOK")
    job_id = started.json()["id"]
    assert (await api.call("POST", f"/image/train/{job_id}/cancel", token=None)).status == 401
    assert (await api.call("POST", f"/image/train/{job_id}/cancel", token="wrong")).status == 401
    await server.services.store.update_training(started.json()["local_id"], user_key="discord:1")
    assert (await api.call("POST", f"/image/train/{job_id}/cancel")).status == 404
    assert (await api.call("POST", "/image/train/nope/cancel")).status == 404
    assert replicate_emu.counts["trainings_canceled"] == 0
    assert replicate_emu.trainings[job_id].status != "canceled"


# --------------------------------------------------------------------------- webhooks


async def test_webhook_route_signatures_and_repeats(
    server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    port = free_port()
    api = await server.start(
        HTTP_PORT=str(port),
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        TRAINING_POLL_SECONDS="3600",
    )
    replicate_emu.training_mode = "manual"
    started = await api.train_upload(zip_bytes(tmp_path), new_model_name="hook", trigger_word="TOK")
    job = replicate_emu.trainings[started.json()["id"]]
    assert job.webhook == f"{api.base_url}/webhooks/replicate"
    store = server.services.store
    local_id = started.json()["local_id"]

    body = json.dumps(job.to_json(replicate_emu.base_url) | {"status": "failed"}).encode()
    forged = replicate_emu.sign(body) | {"webhook-signature": "v1,Zm9yZ2Vk"}
    stale = replicate_emu.sign(body, timestamp=int(time.time()) - 3600)
    for headers in (forged, stale, {}):
        answer = await api.call(
            "POST", "/webhooks/replicate", data=body, headers=headers, token=None
        )
        assert answer.status == 401
    assert (await store.get_training(local_id)).status == "starting"

    await replicate_emu.complete_training(job.id)
    await replicate_emu.wait_for(
        lambda: any(
            "completed" in d.events and d.status == 200 for d in replicate_emu.webhook_deliveries
        )
    )
    done = await store.get_training(local_id)
    assert done.status == "succeeded" and done.notified_at is not None

    final = json.dumps(replicate_emu.trainings[job.id].to_json(replicate_emu.base_url)).encode()
    repeated = replicate_emu.sign(final, msg_id="msg_repeat")
    statuses = []
    for headers in (repeated, repeated, replicate_emu.sign(final)):
        answer = await api.call(
            "POST", "/webhooks/replicate", data=final, headers=headers, token=None
        )
        assert answer.status == 200
        statuses.append(answer.json()["status"])
    assert statuses == ["applied", "duplicate", "applied"]
    after = await store.get_training(local_id)
    assert (after.status, after.version, after.notified_at) == (
        done.status,
        done.version,
        done.notified_at,
    )


async def test_api_and_webhooks_share_the_bots_web_server(
    harness: BotHarness,
    discord_emu: DiscordEmulator,
    replicate_emu: ReplicateEmulator,
    tmp_path: Path,
) -> None:
    port = free_port()
    (tmp_path / "train").mkdir(exist_ok=True)
    await harness.start(
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        HTTP_PORT=str(port),
        API_TOKEN=TOKEN,
        TRAINING_POLL_SECONDS="3600",
        TRAINING_STATUS_EDIT_SECONDS="0",
    )
    replicate_emu.training_mode = "manual"
    await harness.bot.wait_until_ready()
    async with aiohttp.ClientSession() as http:
        api = Api(f"http://127.0.0.1:{port}", http)
        health = await api.call("GET", "/healthz", token=None)
        assert health.status == 200 and health.json()["discord"] is True
        started = await api.train_upload(
            zip_bytes(tmp_path), new_model_name="shared", trigger_word="TOK"
        )
        assert started.status == 201
        job = replicate_emu.trainings[started.json()["id"]]
        assert job.webhook == f"http://127.0.0.1:{port}/webhooks/replicate"
        await replicate_emu.complete_training(job.id)
        await replicate_emu.wait_for(
            lambda: any(
                "completed" in d.events and d.status == 200
                for d in replicate_emu.webhook_deliveries
            )
        )
        stored = await harness.services.store.get_training(started.json()["local_id"])
        assert stored.status == "succeeded" and stored.notified_at is not None
        # The API's quota is its own: a Discord user's generation does not count for it.
        handle = await discord_emu.slash("generate", options={"prompt": "a cat"})
        await handle.wait_original(lambda m: len(m.attachments) == 1, timeout=10)
        answer = await api.generate(prompt="a dog")
        assert answer.status == 200
    # Nothing was posted in Discord for a training started over HTTP.
    assert not [m for m in discord_emu.messages(discord_emu.channel) if "shared" in m.content]


# --------------------------------------------------------------------------- --http-only


async def test_api_jobs_left_unfinished_are_canceled_and_recorded_failed_at_start(
    server: ApiServer, replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    """A previous process died with an HTTP API generation running: its caller is gone,
    so once its lease has run out its prediction is canceled and the job recorded as
    failed. A Discord job left running is kept for a process with Discord to finish, and
    a job another live process holds the lease of is left alone."""
    replicate_emu.prediction_mode = "manual"
    async with ReplicateService(replicate_emu.token, base_url=replicate_emu.base_url) as rs:
        create = asyncio.create_task(rs.generate("black-forest-labs/flux-schnell", "left"))
        job = await replicate_emu.wait_for(lambda: replicate_emu.last_prediction)
        create.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await create
    store = await open_store(api_env(replicate_emu, tmp_path)["DATABASE_URL"])
    started = {"status": "running", "started_at": datetime.now(UTC)}
    try:
        api_job = await store.create_generation(
            NewGeneration(user_key="api:x", prompt="left", model="m", source="api")
        )
        await store.update_generation(api_job.id, prediction_id=job.id, **started)
        discord_job = await store.create_generation(
            NewGeneration(user_key="discord:1", prompt="kept", model="m", channel_id=5)
        )
        await store.update_generation(discord_job.id, **started)
        other_process = await store.create_generation(
            NewGeneration(user_key="api:y", prompt="theirs", model="m", source="api")
        )
        await store.update_generation(
            other_process.id,
            lease_owner="another-process",
            lease_expires_at=datetime.now(UTC) + timedelta(hours=1),
            **started,
        )
    finally:
        await store.close()

    await server.start()
    settled = await wait_for_generation(
        server.services.store, api_job.id, lambda g: g.status != "running"
    )
    assert settled.status == "failed" and "restarted" in (settled.error or "")
    assert replicate_emu.predictions[job.id].status == "canceled"
    kept = await server.services.store.get_generation(discord_job.id)
    assert kept.status == "running"
    theirs = await server.services.store.get_generation(other_process.id)
    assert theirs.status == "running" and theirs.lease_owner == "another-process"


async def test_http_only_process_serves_and_stops_cleanly(
    replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    env = api_env(replicate_emu, tmp_path, HTTP_PORT="0", LOG_LEVEL="INFO")
    env.pop("HTTP_HOST")
    proc = BotProcess(env, cwd=tmp_path, args=("--http-only",))
    await proc.start()
    try:
        line = await proc.wait_for_log("web server listening", timeout=15)
        port = int(line.strip().rpartition(":")[2])
        async with aiohttp.ClientSession() as http:
            api = Api(f"http://127.0.0.1:{port}", http)
            assert (await api.call("GET", "/ping", token=None)).body == b"pong"
            health = await api.call("GET", "/healthz", token=None)
            assert health.status == 200 and health.json()["discord"] == "not running"
            image = await api.generate(prompt="a cat")
            assert image.status == 200 and image.body.startswith(PNG_MAGIC)
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.output
    finally:
        await proc.kill()
    assert "stopped cleanly" in proc.output
    assert TOKEN not in proc.output and replicate_emu.token not in proc.output


async def test_http_only_config_error_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = BotProcess({"HTTP_PORT": "8080"}, cwd=tmp_path, args=("--http-only",))
    await proc.start()
    assert await proc.wait() == 2
    lines = proc.output.strip().splitlines()
    assert len(lines) == 1 and "REPLICATE_API_TOKEN is not set" in lines[0], proc.output
    assert "DISCORD_TOKEN" not in proc.output


async def test_http_only_port_in_use_exits_2(
    replicate_emu: ReplicateEmulator, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = api_env(replicate_emu, tmp_path, HTTP_PORT=str(port), LOG_LEVEL="ERROR")
        proc = BotProcess(env, cwd=tmp_path, args=("--http-only",))
        await proc.start()
        assert await proc.wait() == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.output
    assert "Traceback" not in proc.output
