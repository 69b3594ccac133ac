"""A bounded schemathesis run against the HTTP API, wired to the Replicate emulator.

Every operation of ``api/openapi.json`` gets generated requests (valid and
invalid ones) with a valid token; no answer may be a 5xx or differ from the document
(status code, content type, headers, body)."""

from __future__ import annotations

import asyncio
import json

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import OPENAPI_PATH
from tests.emulators.replicate import ReplicateEmulator
from tests.test_http_api import TOKEN, ApiServer

MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fuzz(base_url: str) -> list[str]:
    """Run every operation in both modes (blocking: the server answers on the test's
    event loop meanwhile). Returns the labels of the operations exercised."""
    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI_PATH.read_text(encoding="utf-8")))
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if len(operation.body) or len(operation.path_parameters) or len(operation.headers):
            modes.append(GenerationMode.NEGATIVE)  # only where there is input to get wrong
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(
                    base_url=base_url, session=session, checks=CHECKS, timeout=30
                )

            run()
        exercised.append(operation.label)
    return exercised


async def test_schemathesis_finds_no_server_error_and_nothing_off_the_document(
    server: ApiServer, replicate_emu: ReplicateEmulator
) -> None:
    api = await server.start(
        GENERATIONS_PER_USER_PER_DAY="0",
        TRAININGS_PER_USER_PER_DAY="0",
        MAX_ACTIVE_TRAININGS_PER_GUILD="1000",
        MAX_TRAIN_ZIP_MB="2",
    )
    exercised = await asyncio.to_thread(fuzz, api.base_url)
    assert set(exercised) == {
        "GET /ping",
        "GET /healthz",
        "GET /openapi.json",
        "POST /image/generate",
        "POST /image/upscale",
        "POST /image/train",
        "GET /image/train/{id}",
        "POST /image/train/{id}/cancel",
        "POST /webhooks/replicate",
        "GET /usage",
        "GET /metrics",
    }
