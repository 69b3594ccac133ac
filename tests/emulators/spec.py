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
    _nullable_as_31(doc)
    config = Config(
        spec_validator_cls=None,
        # Error bodies (RFC 7807) are JSON too; without this they are checked as bytes.
        extra_media_type_deserializers={"application/problem+json": json.loads},
    )
    return OpenAPI.from_dict(doc, config=config)


def _nullable_as_31(node: Any) -> None:
    """The Replicate document says ``openapi: 3.1.0`` but marks null-able fields with
    the 3.0 keyword ``nullable: true``, which 3.1 validators ignore (so every ``null``
    the real API sends would fail). Rewrite it as the 3.1 form: ``null`` added to
    ``type``. Documents written in 3.1 style (Discord's) have no ``nullable``."""
    if isinstance(node, list):
        for item in node:
            _nullable_as_31(item)
        return
    if not isinstance(node, dict):
        return
    if node.pop("nullable", None) is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
    for value in node.values():
        _nullable_as_31(value)


@dataclass
class OpenAPIRequest:
    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


@dataclass
class OpenAPIResponse:
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
    ) -> OpenAPIRequest:
        if content_type.startswith("multipart/form-data"):
            content_type, body = _multipart_as_json(content_type, body or b"")
        return OpenAPIRequest(
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

    def _known(self, method: str, path: str, kind: str, message: str) -> bool:
        reason = is_known_exception(self.service, method, path, kind, message)
        if reason:
            self.skipped.append(f"{method} {path} {kind}: {reason}")
        return reason is not None

    def _unknown(self, method: str, path: str, kind: str, name: str, error: Any) -> list[str]:
        """Details of one schema error that no exception entry explains.

        A failed anyOf/oneOf only says "not valid under any of the given schemas"; it is
        explained when every error inside one of its branches is, so an entry can name
        the precise field (e.g. ``at ['attachments', 0, 'id']``) instead of the body."""
        detail = f"{error.message} at {list(error.absolute_path)}"
        if self._known(method, path, kind, f"{name}: {detail}"):
            return []
        if error.validator not in ("anyOf", "oneOf") or not error.context:
            return [detail]
        branches: dict[Any, list[Any]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        best: list[str] = []
        best_rank: tuple[int, int, int] | None = None
        for index, subs in branches.items():
            left = [d for sub in subs for d in self._unknown(method, path, kind, name, sub)]
            if not left:
                return []
            # Report the branch the value got furthest into (its shallowest error is the
            # deepest), as jsonschema's best_match does for anyOf/oneOf; a bare
            # {type: null} branch is the least likely meant.
            depth = min(len(sub.absolute_path) for sub in subs)
            null = any((sub.validator, sub.validator_value) == ("type", "null") for sub in subs)
            rank = (depth, -int(null), -len(left))
            if best_rank is None or rank > best_rank:
                best_rank = rank
                best = [f"{error.validator}[{index}]: {d}" for d in left]
        return [detail, *best]

    def _record(self, method: str, path: str, kind: str, errors: list[Exception]) -> None:
        for err in errors:
            details = _schema_errors(err)
            if details:
                # One body can break several rules: each schema error is matched on its
                # own ("InvalidData: <message> at [path]"), so an exception entry
                # silences its own disagreement and never the others in the same body.
                name = type(err).__name__
                unknown = [d for e in details for d in self._unknown(method, path, kind, name, e)]
                if not unknown:
                    continue
                message = "\n".join([f"{name}: {err}", *(f"  - {d}" for d in unknown)])
            else:
                message = _describe(err)
                if self._known(method, path, kind, message):
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
        response = OpenAPIResponse(
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


def _schema_errors(err: Exception) -> list[Any]:
    """The jsonschema ``ValidationError``s behind an openapi-core error."""
    found: list[Any] = []
    cause = err.__cause__
    while cause is not None:
        inner = getattr(cause, "schema_errors", None)
        if inner:
            found.extend(inner)
        cause = cause.__cause__
    return found


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
