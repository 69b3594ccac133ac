"""LoRA trainings on Replicate, and their state as :class:`TrainingState`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from services.model_refs import FULL_VERSION
from services.replicate.api import ReplicateApi
from services.replicate.errors import InvalidModelError, NotFoundError, trim
from services.replicate.values import (
    TrainingState,
    parse_model_ref,
    parse_time,
    parse_training_progress,
    seconds_between,
)

log = logging.getLogger(__name__)

# What GET /v1/trainings/{id} (and so a webhook delivery) carries that the state uses.
_PAYLOAD_FIELDS = (
    "id",
    "status",
    "logs",
    "output",
    "error",
    "created_at",
    "started_at",
    "completed_at",
    "metrics",
)


async def start(
    api: ReplicateApi,
    trainer: str,
    destination: str,
    training_input: dict[str, Any],
    *,
    webhook: str | None,
    webhook_events: tuple[str, ...],
) -> TrainingState:
    """Start a training of ``trainer`` (``owner/name:version``) into ``destination``
    (``owner/name``, which must exist)."""
    ref = parse_model_ref(trainer)
    if not ref.version:
        raise InvalidModelError(f"trainer needs a version: {trainer!r}")
    dest = parse_model_ref(destination)
    if dest.version:
        raise InvalidModelError(f"destination must be owner/name: {destination!r}")
    params: dict[str, Any] = {"destination": dest.model}
    if webhook:
        params["webhook"] = webhook
        params["webhook_events_filter"] = list(webhook_events)
    training = await api.create(
        lambda: api.client.trainings.async_create(ref.model, ref.version, training_input, **params),
        what=f"training of {dest.model}",
    )
    log.info("training %s started into %s", training.id, dest.model)
    return state_of(api, training)


async def get(api: ReplicateApi, training_id: str) -> TrainingState:
    training = await api.call(api.client.trainings.async_get(training_id), not_found=NotFoundError)
    return state_of(api, training)


async def cancel(api: ReplicateApi, training_id: str) -> TrainingState:
    training = await api.call(
        api.client.trainings.async_cancel(training_id), not_found=NotFoundError
    )
    return state_of(api, training)


def state_from_payload(api: ReplicateApi, payload: Mapping[str, Any]) -> TrainingState:
    """A webhook delivery's body is the object ``GET /v1/trainings/{id}`` returns."""
    return state_of(api, SimpleNamespace(**{k: payload.get(k) for k in _PAYLOAD_FIELDS}))


def state_of(api: ReplicateApi, training: Any) -> TrainingState:
    """The state of a training as the client (or a webhook delivery) gives it; its error
    text is redacted and trimmed."""
    progress = parse_training_progress(training.logs)
    output = training.output if isinstance(training.output, dict) else {}
    version = output.get("version")
    created = parse_time(training.created_at)
    started = parse_time(training.started_at)
    completed = parse_time(training.completed_at)
    metrics = getattr(training, "metrics", None) or {}
    predict_time = metrics.get("predict_time")
    if not isinstance(predict_time, int | float):
        # The client's Training model drops "metrics"; the run time is what is billed.
        predict_time = seconds_between(started, completed)
    return TrainingState(
        id=training.id,
        status=training.status,
        step=progress[0] if progress else None,
        total=progress[1] if progress else None,
        version=version if isinstance(version, str) and FULL_VERSION.match(version) else None,
        weights=output.get("weights") if isinstance(output.get("weights"), str) else None,
        error=trim(api.redact(training.error)) if training.error else None,
        created_at=created,
        started_at=started,
        completed_at=completed,
        predict_time=float(predict_time) if predict_time is not None else None,
    )
