"""``POST /image/train``: a zip (uploaded, or named inside ``TRAIN_DATA_DIR``) in; the
Replicate training out, with the same checks, limits and records as ``/train``."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from api.auth import requires_token
from api.bodies import (
    UPLOAD_TIMEOUT,
    check_fields,
    integer_field,
    part_chunks,
    read_form,
    read_json_object,
    string_field,
)
from api.keys import SERVICES_KEY, UPLOADS_KEY, USER_KEY
from api.problems import SERVICE_ERRORS, Problem, retry_after, service_problem
from api.routes.trainings import training_object
from api.train_files import TrainFileError, TrainFileNotFound, copy_train_file, too_large_text
from services.app import Services
from services.replicate import ReplicateServiceError
from services.zipcheck import ZipTooLarge, download_to_file

log = logging.getLogger(__name__)

TRAIN_FIELDS = ("new_model_name", "trigger_word", "owner", "steps")
TRAIN_REQUIRED = ("new_model_name", "trigger_word")
DEFAULT_TRAIN_STEPS = 1000
#: Room for the multipart framing and text fields beside the zip itself.
MULTIPART_OVERHEAD = 64 * 1024
#: A request that would wait longer than this for its zip check is told to come back.
MAX_ZIP_CHECK_WAIT = 30.0


@requires_token
async def train(request: web.Request) -> web.Response:
    """Zip (uploaded, or named inside TRAIN_DATA_DIR) in; the Replicate training out."""
    services = request.app[SERVICES_KEY]
    uploads = request.app[UPLOADS_KEY]
    if request.content_type not in ("multipart/form-data", "application/json"):
        raise Problem(415, "Send multipart/form-data (with the zip) or application/json.")
    if uploads.locked():
        raise Problem(503, "Too many uploads at once; try again shortly.", headers=retry_after(30))
    checks = services.trainings.zip_checks
    if checks.expected_wait() > MAX_ZIP_CHECK_WAIT:
        raise Problem(
            503,
            f"{checks.ahead()} training zips are waiting to be checked; try again later.",
            headers=retry_after(checks.expected_wait()),
        )
    async with uploads:
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="api-train-"))
        try:
            zip_path = folder / "images.zip"
            form = request.content_type == "multipart/form-data"
            if form:
                fields, size = await _receive_multipart(request, zip_path, services)
            else:
                fields, size = await _copy_named_file(request, zip_path, services)
            return await _start_training(request, services, fields, zip_path, size, form=form)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)


async def _copy_named_file(
    request: web.Request, zip_path: Path, services: Services
) -> tuple[dict[str, Any], int]:
    """Read the JSON body and copy the zip it names from TRAIN_DATA_DIR to ``zip_path``."""
    data = await read_json_object(request)
    check_fields(data, ("file_name", *TRAIN_FIELDS), ("file_name", *TRAIN_REQUIRED))
    file_name = string_field(data, "file_name", 1024) or ""
    fields = {name: data.get(name) for name in TRAIN_FIELDS}
    await _check_owner(services, fields.get("owner"))
    try:
        size = await asyncio.to_thread(
            copy_train_file,
            services.settings.train_data_dir,
            file_name,
            zip_path,
            services.trainings.zip_limits.max_zip_bytes,
        )
    except TrainFileNotFound as exc:
        raise Problem(404, exc.user_message) from None
    except TrainFileError as exc:
        raise Problem(422, exc.user_message) from None
    return fields, size


async def _check_owner(services: Services, owner: Any) -> None:
    """Never train into another account than the configured one."""
    if owner is None or owner == "":
        return
    if not isinstance(owner, str):
        raise Problem(422, "`owner` must be a string.")
    try:
        configured = await services.trainings.owner()
    except ReplicateServiceError as exc:
        raise service_problem(exc) from None
    if owner != configured:
        raise Problem(
            403,
            f"This server trains models under the Replicate account `{configured}` only; "
            "leave `owner` out or set it to that account.",
        )


async def _start_training(
    request: web.Request,
    services: Services,
    fields: dict[str, Any],
    zip_path: Path,
    size: int,
    *,
    form: bool,
) -> web.Response:
    for name in TRAIN_REQUIRED:
        value = fields.get(name)
        if value in (None, ""):
            raise Problem(422, f"Missing required field(s): {name}.")
        if not isinstance(value, str):
            raise Problem(422, f"`{name}` must be a string.")
    steps = integer_field(fields.get("steps"), "steps", 100, 4000, text=form) or DEFAULT_TRAIN_STEPS
    key = request[USER_KEY]
    try:
        started = await services.trainings.start(
            zip_path=zip_path,
            trigger_word=fields["trigger_word"],
            model_name=fields["new_model_name"],
            steps=steps,
            user_key=key,
            guild_id=None,
            channel_id=None,
            source="api",
            declared_size=size,
        )
    except SERVICE_ERRORS as exc:
        raise service_problem(exc) from None
    training = started.training
    log.info("api training %s (%s) into %s", training.id, training.training_id, training.model_ref)
    body = training_object(services, training, None)
    body["warnings"] = list(started.report.warnings)
    return web.json_response(
        body, status=201, headers={"Location": f"/image/train/{training.training_id}"}
    )


async def _receive_multipart(
    request: web.Request, zip_path: Path, services: Services
) -> tuple[dict[str, Any], int]:
    """Stream the ``file`` part to ``zip_path`` (size-capped) and read the text fields."""
    max_zip = services.trainings.zip_limits.max_zip_bytes
    if request.content_length is not None and request.content_length > max_zip + (
        MULTIPART_OVERHEAD
    ):
        raise Problem(413, too_large_text(max_zip))
    size = 0

    async def read_zip(part: BodyPartReader) -> None:
        nonlocal size
        size = await download_to_file(part_chunks(part), zip_path, max_zip)

    try:
        fields, got_zip = await read_form(
            request,
            file_part="file",
            read_file=read_zip,
            fields=TRAIN_FIELDS,
            one_file="Send one zip only, in the part named `file`.",
            within=UPLOAD_TIMEOUT,
            what="upload",
        )
    except ZipTooLarge:
        raise Problem(413, too_large_text(max_zip)) from None
    if not got_zip:
        raise Problem(422, "Put the training zip in a multipart part named `file`.")
    await _check_owner(services, fields.get("owner"))
    return fields, size
