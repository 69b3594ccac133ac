"""The API's routes (the jobs' own are in :mod:`.routes_jobs`): account, models and
versions, files, and the output file server."""

from __future__ import annotations

import io
import json

from aiohttp import web
from werkzeug.formparser import MultiPartParser

from tests.emulators.replicate.common import (
    MODEL_NAME,
    NOT_FOUND,
    boundary,
    new_id,
    problem,
)
from tests.emulators.replicate.model import Model, StoredFile
from tests.emulators.replicate.routes_jobs import JobRoutes


class Routes(JobRoutes):
    def _add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/account", self._account)
        r.add_get("/v1/webhooks/default/secret", self._secret)
        r.add_post("/v1/models", self._create_model)
        r.add_get("/v1/models/{owner}/{name}", self._get_model)
        r.add_get("/v1/models/{owner}/{name}/versions", self._list_versions)
        r.add_get("/v1/models/{owner}/{name}/versions/{version}", self._get_version)
        r.add_post("/v1/models/{owner}/{name}/predictions", self._create_official_prediction)
        r.add_post("/v1/models/{owner}/{name}/versions/{version}/trainings", self._create_training)
        r.add_post("/v1/predictions", self._create_version_prediction)
        r.add_get("/v1/predictions", self._list_predictions)
        r.add_get("/v1/predictions/{id}", self._get_prediction)
        r.add_post("/v1/predictions/{id}/cancel", self._cancel_prediction)
        r.add_post("/v1/files", self._create_file)
        r.add_get("/v1/files/{id}", self._get_file)
        r.add_get("/v1/trainings/{id}", self._get_training)
        r.add_post("/v1/trainings/{id}/cancel", self._cancel_training)

    # ------------------------------------------------------------------ account, models

    async def _account(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"type": "user", "username": self.username, "name": "Emulated User"}
        )

    async def _secret(self, request: web.Request) -> web.Response:
        return web.json_response({"key": self.webhook_secret})

    async def _get_model(self, request: web.Request) -> web.Response:
        model = self._model_or_404(request.match_info["owner"], request.match_info["name"])
        return web.json_response(model.to_json())

    async def _create_model(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        owner, name = str(body.get("owner", "")), str(body.get("name", ""))
        missing = [k for k in ("owner", "name", "visibility", "hardware") if not body.get(k)]
        if missing:
            return problem(422, "Invalid request", f"Missing fields: {', '.join(missing)}")
        if not MODEL_NAME.fullmatch(name):
            return problem(
                422,
                "Invalid model name",
                "Model names may only contain lowercase letters, numbers, dashes, "
                "underscores, or periods, and must start with a letter or number.",
            )
        if owner != self.username:
            return problem(
                403, "Forbidden", "You do not have permission to create models for this owner."
            )
        if f"{owner}/{name}" in self.models:
            return problem(409, "Conflict", "A model with that name and owner already exists.")
        model = Model(
            owner,
            name,
            visibility=str(body["visibility"]),
            hardware=str(body["hardware"]),
            description=body.get("description"),
        )
        self.models[model.ref] = model
        self.counts["models_created"] += 1
        await self._notify()
        return web.json_response(model.to_json(), status=201)

    async def _list_versions(self, request: web.Request) -> web.Response:
        """Newest first, in one page (no model here has a hundred versions)."""
        model = self._model_or_404(request.match_info["owner"], request.match_info["name"])
        newest = sorted(model.versions.values(), key=lambda v: v.created_at, reverse=True)
        return web.json_response(
            {"next": None, "previous": None, "results": [v.to_json() for v in newest]}
        )

    async def _get_version(self, request: web.Request) -> web.Response:
        model = self._model_or_404(request.match_info["owner"], request.match_info["name"])
        version = model.version(request.match_info["version"])
        if version is None:
            return problem(404, "Not found", NOT_FOUND)
        return web.json_response(version.to_json())

    # ------------------------------------------------------------------ files

    async def _create_file(self, request: web.Request) -> web.Response:
        raw = await request.read()
        parts = request.content_type == "multipart/form-data" and boundary(request)
        if not parts:
            return problem(400, "Bad Request", "Expected multipart/form-data")
        form, uploads = MultiPartParser().parse(io.BytesIO(raw), parts, len(raw))
        upload = uploads.get("content")
        if upload is None:
            return problem(422, "Invalid request", "The content part is required")
        try:
            data = upload.read()
        finally:
            upload.close()
        if len(data) > 100 * 1024 * 1024:
            return problem(413, "Content Too Large", "Files must be less than 100MB in size")
        try:
            metadata = json.loads(form.get("metadata") or "{}")
        except ValueError:
            return problem(422, "Invalid request", "metadata must be JSON")
        stored = StoredFile(
            id=new_id(),
            name=form.get("filename") or upload.filename or "file",
            content_type=form.get("type") or upload.mimetype or "application/octet-stream",
            data=data,
            metadata=metadata if isinstance(metadata, dict) else {},
        )
        self.files[stored.id] = stored
        self.counts["files_created"] += 1
        await self._notify()
        return web.json_response(stored.to_json(self.base_url), status=201)

    async def _get_file(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["id"])
        if stored is None:
            return problem(404, "Not found", "File not found")
        return web.json_response(stored.to_json(self.base_url))

    # ------------------------------------------------------------------ output files

    async def _serve_output(self, request: web.Request) -> web.StreamResponse:
        self.output_requests.append((request.path, dict(request.headers)))
        stored = self._outputs.get(request.path)
        if stored is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = stored
        return web.Response(body=data, content_type=content_type)
