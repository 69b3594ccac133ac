"""Models and files on Replicate: what a model takes, a destination model for a training,
and uploads."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, BinaryIO

from replicate.version import Versions

from services.model_inputs import ModelInputs
from services.replicate.api import ReplicateApi
from services.replicate.errors import (
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    ReplicateServiceError,
    ReplicateUnavailable,
)
from services.replicate.values import UploadedFile, parse_model_ref

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # Replicate's limit for POST /v1/files
# The hardware named when creating a destination model for a LoRA training; Replicate
# replaces it with the trainer's own hardware when the trained version is pushed.
DESTINATION_HARDWARE = "gpu-t4"


async def model_exists(api: ReplicateApi, owner: str, name: str) -> bool:
    ref = parse_model_ref(f"{owner}/{name}")
    try:
        await api.call(api.client.models.async_get(ref.owner, ref.name))
    except ModelNotFoundError:
        return False
    return True


async def model_inputs(api: ReplicateApi, model: str) -> ModelInputs:
    """What ``model`` takes: the ``openapi_schema`` of its latest version for
    ``owner/name`` (``GET /v1/models/{owner}/{name}``), of that version for
    ``owner/name:version`` (``GET .../versions/{version}``)."""
    ref = parse_model_ref(model)
    if ref.version:
        versions = Versions(api.client, (ref.owner, ref.name))
        version = await api.call(versions.async_get(ref.version))
        return ModelInputs.from_openapi(
            version.openapi_schema, model=str(ref), version=version.id, official=False
        )
    # The client's Model drops ``is_official``, which says whether the model is run by
    # name or by version, so the model is read as it comes.
    response = await api.call(api.client._async_request("GET", f"/v1/models/{ref.model}"))
    body: Any = response.json()
    latest = body.get("latest_version") if isinstance(body, dict) else None
    latest = latest if isinstance(latest, dict) else {}
    official = body.get("is_official") if isinstance(body, dict) else None
    return ModelInputs.from_openapi(
        latest.get("openapi_schema"),
        model=ref.model,
        version=latest.get("id") if isinstance(latest.get("id"), str) else None,
        official=official if isinstance(official, bool) else None,
    )


async def ensure_model(api: ReplicateApi, owner: str, name: str) -> bool:
    """Make sure ``owner/name`` exists; create it private if not. True if created."""
    ref = parse_model_ref(f"{owner}/{name}")
    if await model_exists(api, ref.owner, ref.name):
        return False
    try:
        await api.call(
            api.client.models.async_create(
                ref.owner, ref.name, visibility="private", hardware=DESTINATION_HARDWARE
            )
        )
    except ReplicateServiceError as exc:
        # Another task may have created it meanwhile (409); anything else is real.
        if isinstance(exc, ReplicateUnavailable) or not await model_exists(
            api, ref.owner, ref.name
        ):
            raise
        return False
    log.info("created private model %s", ref.model)
    return True


async def upload(
    api: ReplicateApi, source: str | Path | BinaryIO, *, filename: str, content_type: str
) -> UploadedFile:
    """Upload a file (a path, or a binary file object) for use as a model input."""
    if isinstance(source, str | Path):
        path = Path(source)
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        if size > MAX_UPLOAD_BYTES:
            raise InvalidInputError(
                f"file is {size} bytes, limit {MAX_UPLOAD_BYTES}",
                user_message="The file is too large for Replicate (100 MB at most).",
            )
        # Streamed from disk as it is sent (read in a worker thread by the transport):
        # ten zips uploaded at once must not be ten zips in memory.
        opened: BinaryIO = await asyncio.to_thread(path.open, "rb")
        try:
            return await _upload(api, opened, filename, content_type)
        finally:
            await asyncio.to_thread(opened.close)
    return await _upload(api, source, filename, content_type)


async def _upload(
    api: ReplicateApi, fileobj: BinaryIO, filename: str, content_type: str
) -> UploadedFile:
    uploaded = await api.call(
        api.client.files.async_create(fileobj, filename=filename, content_type=content_type),
        not_found=NotFoundError,
    )
    return UploadedFile(id=uploaded.id, url=uploaded.urls.get("get", ""), size=uploaded.size)
