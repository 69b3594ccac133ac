"""The routes that start and follow jobs: predictions and trainings, and what every
route shares (bodies, models by name, ``Prefer: wait``, input validation)."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.emulators.replicate.common import (
    ALL_EVENTS,
    MODEL_NAME,
    NOT_FOUND,
    ZIP_ERROR,
    ProblemError,
    new_id,
    not_found,
    now,
    problem,
)
from tests.emulators.replicate.jobs import JobsMixin
from tests.emulators.replicate.model import Job, Model, Version
from tests.emulators.replicate.validation import refuse_input

_INVALID_VERSION = (
    "The specified version does not exist (or perhaps you don't have permission to use it?)"
)


class JobRoutes(JobsMixin):
    # ------------------------------------------------------------------ plumbing

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise ProblemError(400, "Bad Request", "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ProblemError(400, "Bad Request", "The request body must be a JSON object")
        return body

    def _model_or_404(self, owner: str, name: str) -> Model:
        model = self.models.get(f"{owner}/{name}")
        if model is None or (model.visibility == "private" and model.owner != self.username):
            raise not_found()
        return model

    def _wait_seconds(self, request: web.Request) -> float | None:
        prefer = request.headers.get("Prefer", "")
        match = re.fullmatch(r"\s*wait(?:=(\d+))?\s*", prefer)
        if not match:
            return None
        return float(match.group(1) or 60)

    async def _answer_created(self, request: web.Request, job: Job) -> web.Response:
        wait = self._wait_seconds(request)
        if wait:
            with contextlib.suppress(TimeoutError):
                await self.wait_for(lambda: job.finished or self._closing, wait)
        return web.json_response(job.to_json(self.base_url), status=201)

    def _refuse(self, version: Version, payload: Any) -> web.Response | None:
        return refuse_input(version.schema, payload, refuse_unknown=self.unknown_inputs == "refuse")

    # ------------------------------------------------------------------ predictions

    async def _create_official_prediction(self, request: web.Request) -> web.Response:
        model = self._model_or_404(request.match_info["owner"], request.match_info["name"])
        body = await self._json_body(request)
        version = model.latest_version
        if not model.official or version is None:
            return problem(404, "Not found", NOT_FOUND)
        return await self._create_prediction(request, model, "hidden", version, body)

    async def _create_version_prediction(self, request: web.Request) -> web.Response:
        """``version`` is ``owner/name:<id>``, a bare ``<id>``, or (since August 2025)
        ``owner/name`` of an official model."""
        body = await self._json_body(request)
        ref = str(body.get("version", ""))
        if "/" in ref and ":" not in ref:
            model = self.models.get(ref)
            if model is not None and model.official and model.latest_version is not None:
                return await self._create_prediction(
                    request, model, "hidden", model.latest_version, body
                )
        version_id = ref.rsplit(":", 1)[-1]
        for model in self.models.values():
            version = model.version(version_id)
            if version is not None and version.kind != "trainer" and not model.official:
                return await self._create_prediction(request, model, version_id, version, body)
        return problem(422, "Invalid version or not permitted", _INVALID_VERSION)

    async def _create_prediction(
        self, request: web.Request, model: Model, version_label: str, version: Version, body: dict
    ) -> web.Response:
        payload = body.get("input")
        refused = self._refuse(version, payload)
        if refused is not None:
            return refused
        job = Job(
            kind="prediction",
            id=new_id(),
            model=model.ref,
            version=version_label,
            input=payload,
            schema=version.schema,
            webhook=body.get("webhook"),
            webhook_events=frozenset(body.get("webhook_events_filter") or ALL_EVENTS),
            seed=int(payload["seed"]) if "seed" in payload else random.randrange(2**31),
            fail_with=self._next_failure,
            output_bytes=self.next_output_bytes,
            runs=version.kind,
        )
        self._next_failure = None
        self.next_output_bytes = None
        await self._receive_images(job)
        self.predictions[job.id] = job
        self._running_predictions += 1
        self.peak_running_predictions = max(self.peak_running_predictions, self.running_predictions)
        self.last_prediction_input = payload
        self.counts["predictions_created"] += 1
        model.run_count += 1
        self._queue_webhook(job, ("start",))
        await self._notify()
        if self.prediction_mode == "auto":
            self._spawn(self._run_prediction(job))
        return await self._answer_created(request, job)

    async def _list_predictions(self, request: web.Request) -> web.Response:
        """Newest first, ``list_page_size`` (100) a page, with an opaque ``cursor`` to the
        next and previous pages, as Replicate pages them; ``created_after`` (inclusive)
        and ``created_before`` keep those created in that time."""
        newest = sorted(self.predictions.values(), key=lambda j: j.created_at, reverse=True)
        filters = {
            k: request.query[k] for k in ("created_after", "created_before") if k in request.query
        }
        try:
            raw = request.query.get("cursor")
            start = int(base64.urlsafe_b64decode(raw).decode().removeprefix("o=")) if raw else 0
        except ValueError:
            return problem(400, "Bad Request", "Invalid cursor")
        try:
            bounds = {k: datetime.fromisoformat(v) for k, v in filters.items()}
        except ValueError:
            return problem(400, "Bad Request", "Invalid date-time")
        if any(b.tzinfo is None for b in bounds.values()):
            return problem(400, "Bad Request", "Invalid date-time")
        if "created_after" in bounds:
            newest = [j for j in newest if j.created_at >= bounds["created_after"]]
        if "created_before" in bounds:
            newest = [j for j in newest if j.created_at < bounds["created_before"]]
        size = self.list_page_size

        def link(offset: int) -> str:
            cursor = base64.urlsafe_b64encode(f"o={offset}".encode()).decode()
            return f"{self.base_url}/v1/predictions?{urlencode({**filters, 'cursor': cursor})}"

        results = [job.to_json(self.base_url) for job in newest[start : start + size]]
        return web.json_response(
            {
                "next": link(start + size) if start + size < len(newest) else None,
                "previous": link(max(0, start - size)) if start > 0 else None,
                "results": results,
            }
        )

    async def _get_prediction(self, request: web.Request) -> web.Response:
        return self._job_answer(self.predictions.get(request.match_info["id"]))

    async def _cancel_prediction(self, request: web.Request) -> web.Response:
        return await self._cancel_job(self.predictions.get(request.match_info["id"]))

    def _job_answer(self, job: Job | None) -> web.Response:
        if job is None:
            return problem(404, "Not found", NOT_FOUND)
        return web.json_response(job.to_json(self.base_url))

    async def _cancel_job(self, job: Job | None) -> web.Response:
        if job is not None and not job.finished:
            self.counts[f"{job.kind}s_canceled"] += 1
            await self._update(job, status="canceled", completed_at=now())
        return self._job_answer(job)

    # ------------------------------------------------------------------ trainings

    async def _create_training(self, request: web.Request) -> web.Response:
        trainer = self._model_or_404(request.match_info["owner"], request.match_info["name"])
        version = trainer.versions.get(request.match_info["version"])
        if version is None or version.kind != "trainer":
            return problem(404, "Not found", NOT_FOUND)
        body = await self._json_body(request)
        destination = str(body.get("destination", ""))
        owner, _, name = destination.partition("/")
        if not owner or not MODEL_NAME.fullmatch(name):
            return problem(
                422,
                "Invalid destination",
                "The destination must be in the format owner/name, with a name of lowercase "
                "letters, numbers, dashes, underscores, or periods.",
            )
        if destination not in self.models or owner != self.username:
            return problem(404, "Not found", "The specified training destination does not exist")
        payload = body.get("input")
        refused = self._refuse(version, payload)
        if refused is not None:
            return refused
        job = Job(
            kind="training",
            id=new_id(),
            model=trainer.ref,
            version=version.id,
            input=payload,
            schema=version.schema,
            destination=destination,
            webhook=body.get("webhook"),
            webhook_events=frozenset(body.get("webhook_events_filter") or ALL_EVENTS),
            fail_with=self._zip_problem(str(payload.get("input_images", ""))),
            runs=version.kind,
        )
        self.trainings[job.id] = job
        self.counts["trainings_created"] += 1
        self._queue_webhook(job, ("start",))
        await self._notify()
        if self.training_mode == "auto":
            self._spawn(self._run_training(job))
        return web.json_response(job.to_json(self.base_url), status=201)

    def _zip_problem(self, url: str) -> str | None:
        """The trainer's own check: an uploaded file that is not a zip fails the run."""
        prefix = f"{self.base_url}/v1/files/"
        if url.startswith(prefix):
            stored = self.files.get(url[len(prefix) :].split("/", 1)[0])
            if stored is not None and not stored.data.startswith(b"PK\x03\x04"):
                return ZIP_ERROR
        return None

    async def _get_training(self, request: web.Request) -> web.Response:
        return self._job_answer(self.trainings.get(request.match_info["id"]))

    async def _cancel_training(self, request: web.Request) -> web.Response:
        return await self._cancel_job(self.trainings.get(request.match_info["id"]))
