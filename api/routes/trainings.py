"""``GET /image/train/{id}`` and ``POST /image/train/{id}/cancel``: trainings started with
this token, in the shape of Replicate's training object."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aiohttp import web

from api.auth import requires_token
from api.keys import SERVICES_KEY, USER_KEY
from api.problems import Problem
from services.app import Services
from services.errors import UserFacingError
from services.replicate import ReplicateServiceError, TrainingState, parse_model_ref
from services.store import Training
from services.training import FINAL

log = logging.getLogger(__name__)


@requires_token
async def _own_training(request: web.Request) -> Training:
    """The training named in the path (Replicate's id or the local id), if this token
    started it; a 404 otherwise, so that others' trainings cannot even be probed."""
    store = request.app[SERVICES_KEY].store
    ident = request.match_info["id"]
    training = await store.get_training_by_replicate_id(ident) or await store.get_training(ident)
    if training is None or training.user_key != request[USER_KEY]:
        raise Problem(404, f"There is no training `{ident[:100]}` started with this token.")
    return training


async def cancel_training(request: web.Request) -> web.Response:
    """Cancel a running training (Replicate stops billing it); a finished one is
    answered as it is."""
    services = request.app[SERVICES_KEY]
    training = await _own_training(request)
    if training.status not in FINAL:
        try:
            training = await services.trainings.cancel(training.id)
        except ReplicateServiceError:
            raise
        except UserFacingError as exc:
            raise Problem(409, exc.user_message) from None
    return web.json_response(training_object(services, training, None))


async def get_training(request: web.Request) -> web.Response:
    """The training's current state (Replicate's id or the local id), refreshed from
    Replicate while it runs; only trainings started with this token are visible."""
    services = request.app[SERVICES_KEY]
    training = await _own_training(request)
    state: TrainingState | None = None
    if training.training_id and training.status not in FINAL:
        try:
            state = await services.replicate.get_training(training.training_id)
            training = await services.trainings.apply(training, state)
        except ReplicateServiceError as exc:
            # The stored state is still an answer; the tracker catches up later.
            log.warning("could not refresh training %s: %s", training.id, exc)
            state = None
    return web.json_response(training_object(services, training, state))


def training_object(
    services: Services, training: Training, state: TrainingState | None
) -> dict[str, Any]:
    """The training in the shape of Replicate's training object, from the store (plus
    Replicate's latest answer when there is one), with ``local_id`` and ``progress``."""
    trainer = parse_model_ref(services.settings.trainer_version)
    replicate_id = training.training_id or ""
    base = services.replicate.base_url
    body: dict[str, Any] = {
        "id": replicate_id,
        "model": trainer.model,
        "version": trainer.version or "",
        "destination": training.model_ref,
        "status": training.status,
        "input": {
            "input_images": training.params.get("input_images", ""),
            "trigger_word": training.trigger_word,
            "steps": training.steps,
        },
        "error": training.error,
        "source": "api",
        "created_at": _iso(training.created_at),
        "urls": {
            "get": f"{base}/v1/trainings/{replicate_id}",
            "cancel": f"{base}/v1/trainings/{replicate_id}/cancel",
        },
        "local_id": training.id,
        "progress": {"step": training.step, "total": training.total_steps},
    }
    if training.started_at:
        body["started_at"] = _iso(training.started_at)
    if training.completed_at:
        body["completed_at"] = _iso(training.completed_at)
    if training.version or training.weights:
        body["output"] = {
            key: value
            for key, value in (("version", training.version), ("weights", training.weights))
            if value
        }
    if state is not None and state.predict_time is not None:
        body["metrics"] = {"predict_time": state.predict_time}
    return body


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
