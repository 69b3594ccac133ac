"""OpenAPI validation shared by the emulators.

Each emulator installs :func:`validation_middleware`: every request the code under test
sends and every response the emulator returns is checked against the official OpenAPI
document of the real service. Violations are collected on the :class:`SpecChecker`; the
test fixtures fail a test that produced any. Where a real client and the document
disagree, the case is listed in ``tests/emulators/spec_exceptions.py`` with its reason.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.emulators.spec_exceptions import is_known_exception

log = logging.getLogger(__name__)

SPECS_DIR = Path(__file__).resolve().parent / "specs"


@cache
def load_spec(name: str) -> OpenAPI:
    """Load one OpenAPI document once per process (the Discord one is large)."""
    with (SPECS_DIR / name).open(encoding="utf-8") as fh:
        doc = json.load(fh)
    return OpenAPI.from_dict(doc, config=Config(spec_validator_cls=None))


@dataclass
class _Request:
    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


@dataclass
class _Response:
    status_code: int
    content_type: str
    headers: Mapping[str, Any]
    data: bytes | None


@dataclass
class Violation:
    service: str
    method: str
    path: str
    kind: str  # "request" or "response"
    message: str

    def __str__(self) -> str:
        return f"{self.service} {self.kind} {self.method} {self.path}: {self.message}"


@dataclass
class SpecChecker:
    """Validates traffic against one document; ``host_url`` is the real server's host."""

    service: str
    spec_file: str
    host_url: str
    path_prefix: str = ""
    violations: list[Violation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    enabled: bool = True

    @property
    def spec(self) -> OpenAPI:
        return load_spec(self.spec_file)

    def _request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        content_type: str,
        body: bytes | None,
    ) -> _Request:
        if content_type.startswith("multipart/form-data"):
            content_type, body = _multipart_as_json(content_type, body or b"")
        return _Request(
            host_url=self.host_url,
            path=self.path_prefix + path,
            method=method.lower(),
            body=body if body else None,
            content_type=content_type or "application/json",
            parameters=RequestParameters(
                query=ImmutableMultiDict(list(query.items())),
                header=Headers(list(headers.items())),
            ),
        )

    def _record(self, method: str, path: str, kind: str, errors: list[Exception]) -> None:
        for err in errors:
            message = _describe(err)
            reason = is_known_exception(self.service, method, path, kind, message)
            if reason:
                self.skipped.append(f"{method} {path} {kind}: {reason}")
                continue
            violation = Violation(self.service, method, path, kind, message)
            log.error("spec violation: %s", violation)
            self.violations.append(violation)

    def check(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        req_headers: Mapping[str, str],
        req_content_type: str,
        req_body: bytes | None,
        status: int,
        resp_content_type: str,
        resp_headers: Mapping[str, str],
        resp_body: bytes | None,
        *,
        check_request: bool = True,
    ) -> None:
        """Validate one exchange. ``check_request`` is False for requests the emulator
        refused on purpose (a scripted error) where only the response is of interest."""
        if not self.enabled:
            return
        request = self._request(method, path, query, req_headers, req_content_type, req_body)
        if check_request:
            self._record(method, path, "request", list(self.spec.iter_request_errors(request)))
        response = _Response(
            status_code=status,
            content_type=resp_content_type or "",
            headers=dict(resp_headers),
            data=resp_body,
        )
        self._record(
            method, path, "response", list(self.spec.iter_response_errors(request, response))
        )

    def assert_clean(self) -> None:
        if self.violations:
            lines = "\n".join(str(v) for v in self.violations)
            raise AssertionError(f"{len(self.violations)} spec violation(s):\n{lines}")


def _describe(err: Exception) -> str:
    parts = [f"{type(err).__name__}: {err}"]
    cause = err.__cause__
    while cause is not None:
        inner = getattr(cause, "schema_errors", None)
        if inner:
            parts.extend(f"  - {e.message} at {list(e.absolute_path)}" for e in inner)
        else:
            parts.append(f"  caused by {type(cause).__name__}: {cause}")
        cause = cause.__cause__
    return "\n".join(parts)


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


def _multipart_as_json(content_type: str, body: bytes) -> tuple[str, bytes]:
    """Discord takes multipart with a ``payload_json`` part plus files; the documents
    describe the JSON shape. Validate ``payload_json`` as the JSON body it stands for."""
    match = _BOUNDARY.search(content_type)
    if not match:
        return content_type, body
    boundary = match.group(1).encode()
    for part in body.split(b"--" + boundary):
        head, _, payload = part.partition(b"\r\n\r\n")
        if b'name="payload_json"' in head:
            return "application/json", payload.rstrip(b"\r\n")
    return content_type, body


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def validation_middleware(checker: SpecChecker) -> Any:
    """aiohttp middleware validating every JSON exchange of the emulator's API routes.

    Routes that are not part of the document (test-only helpers, output files, the
    gateway websocket) are skipped by the handler marking ``request["spec_skip"] = True``
    or by living outside ``checker.path_prefix``-mapped API paths the caller chooses."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else b""
        response = await handler(request)
        if request.get("spec_skip") or not isinstance(response, web.Response):
            return response
        resp_body = response.body if isinstance(response.body, bytes) else b""
        path = request.path
        if checker.path_prefix and path.startswith(checker.path_prefix):
            path = path[len(checker.path_prefix) :]
        checker.check(
            request.method,
            path,
            request.query,
            request.headers,
            request.headers.get("Content-Type", ""),
            body,
            response.status,
            response.headers.get("Content-Type", ""),
            response.headers,
            resp_body,
            check_request=not request.get("spec_skip_request", False),
        )
        return response

    return middleware
