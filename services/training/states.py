"""What a training's state means: which ones are final, and how far a running one is."""

from __future__ import annotations

from datetime import datetime

from services.replicate import TrainingState
from services.store import Training

FINAL = ("succeeded", "failed", "canceled")
ERROR_TEXT = 300


def progress_bar(step: int | None, total: int | None, width: int = 20) -> str:
    if not total or step is None:
        return "▱" * width
    filled = min(width, round(width * step / total))
    return "▰" * filled + "▱" * (width - filled)


def eta_seconds(training: Training, now: datetime) -> float | None:
    if not training.started_at or not training.step or not training.total_steps:
        return None
    elapsed = (now - training.started_at).total_seconds()
    return elapsed * (training.total_steps - training.step) / training.step


def state_of(training: Training) -> TrainingState:
    """The training as the store has it, in the form Replicate reports it."""
    return TrainingState(
        id=training.training_id or "",
        status=training.status,
        step=training.step,
        total=training.total_steps,
        version=training.version,
        weights=training.weights,
        error=training.error,
        created_at=training.created_at,
        started_at=training.started_at,
        completed_at=training.completed_at,
        predict_time=None,
    )
