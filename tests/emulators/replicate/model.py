"""What the emulator holds: models and their versions, jobs (predictions and
trainings), uploaded files, the input images it received, webhook deliveries, scripts."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tests.emulators.replicate.common import ALL_EVENTS, TERMINAL, iso, now


@dataclass
class Version:
    id: str
    schema: dict
    created_at: datetime = field(default_factory=now)
    kind: str = "image"  # "image" (prompt to images), "upscaler" or "trainer"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": iso(self.created_at),
            "cog_version": "0.14.1",
            "openapi_schema": self.schema,
        }


@dataclass
class Model:
    owner: str
    name: str
    visibility: str = "public"
    official: bool = False
    description: str | None = None
    hardware: str = "gpu-h100"
    versions: dict[str, Version] = field(default_factory=dict)
    created_at: datetime = field(default_factory=now)
    run_count: int = 0

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def latest_version(self) -> Version | None:
        return list(self.versions.values())[-1] if self.versions else None

    def version(self, version_id: str) -> Version | None:
        return next((v for v in self.versions.values() if v.id == version_id), None)

    def to_json(self) -> dict[str, Any]:
        latest = self.latest_version
        body: dict[str, Any] = {
            "url": f"https://replicate.com/{self.ref}",
            "owner": self.owner,
            "name": self.name,
            "visibility": self.visibility,
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "cover_image_url": None,
            "run_count": self.run_count,
            "default_example": None,
            "latest_version": latest.to_json() if latest else None,
            "is_official": self.official,
        }
        if self.description is not None:
            body["description"] = self.description
        return body


@dataclass
class ReceivedImage:
    """A file input of a prediction as the model got it.

    ``source`` says how it was given: ``"data"`` (a data URI, decoded), ``"file"`` (the
    URL of a file uploaded through ``/v1/files``), ``"output"`` (the URL of one of the
    emulator's own outputs) or ``"url"`` (any other URL, fetched). ``error`` is set, and
    ``data`` empty, when it could not be read; the prediction then fails."""

    prediction_id: str
    input: str  # the input's name, e.g. "image"
    source: str
    url: str  # as sent; a data URI is cut to its header
    data: bytes = field(repr=False)
    content_type: str | None = None
    error: str | None = None


@dataclass
class Job:
    """A prediction or a training: same lifecycle, slightly different JSON."""

    kind: str  # "prediction" or "training"
    id: str
    model: str
    version: str
    input: dict[str, Any]
    schema: dict
    status: str = "starting"
    logs: str = ""
    output: Any = None
    error: str | None = None
    data_removed: bool = False
    created_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    webhook: str | None = None
    webhook_events: frozenset[str] = ALL_EVENTS
    destination: str | None = None
    fail_with: str | None = None  # scripted failure text
    output_bytes: int | None = None  # scripted size of each output image
    seed: int = 0
    step: int = 0
    runs: str = "image"  # the version's kind: what the job produces
    images: dict[str, ReceivedImage] = field(default_factory=dict)  # file inputs by name

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_json(self, base_url: str) -> dict[str, Any]:
        path = "predictions" if self.kind == "prediction" else "trainings"
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": self.logs,
            "error": self.error,
            "status": self.status,
            "created_at": iso(self.created_at),
            "source": "api",
            "urls": {
                "get": f"{base_url}/v1/{path}/{self.id}",
                "cancel": f"{base_url}/v1/{path}/{self.id}/cancel",
                "web": f"https://replicate.com/p/{self.id}",
            },
        }
        if self.kind == "prediction":
            body["output"] = self.output
            body["data_removed"] = self.data_removed
        else:
            body["destination"] = self.destination
            if self.output is not None:  # the document types it as an object, never null
                body["output"] = self.output
        if self.started_at:
            body["started_at"] = iso(self.started_at)
        if self.completed_at:
            body["completed_at"] = iso(self.completed_at)
            metrics: dict[str, float] = {
                "total_time": (self.completed_at - self.created_at).total_seconds()
            }
            if self.started_at:
                metrics["predict_time"] = (self.completed_at - self.started_at).total_seconds()
            body["metrics"] = metrics
        return body


@dataclass
class StoredFile:
    id: str
    name: str
    content_type: str
    data: bytes = field(repr=False)
    metadata: dict[str, Any]
    created_at: datetime = field(default_factory=now)

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.data),
            "etag": hashlib.md5(self.data).hexdigest(),
            "checksums": {
                "sha256": hashlib.sha256(self.data).hexdigest(),
                "md5": hashlib.md5(self.data).hexdigest(),
            },
            "metadata": self.metadata,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.created_at + timedelta(days=1)),
            "urls": {"get": f"{base_url}/v1/files/{self.id}"},
        }


@dataclass
class WebhookDelivery:
    url: str
    events: tuple[str, ...]
    body: bytes = field(repr=False)
    headers: dict[str, str]
    attempt: int
    status: int | None  # None: connection failed


@dataclass
class Script:
    action: str  # "error" | "hang" | "rate_limit" | "mangle"
    method: str
    path: re.Pattern[str]
    remaining: int
    status: int = 500
    retry_after: float | None = None
    process: bool = False
    mangle: Callable[[Any], Any] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and self.method in (method, "*")
            and self.path.fullmatch(path) is not None
        )
