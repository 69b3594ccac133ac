"""What the store takes and gives back: frozen records and the allowed statuses and sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

GenerationStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TrainingStatus = Literal["starting", "processing", "succeeded", "failed", "canceled"]
Source = Literal["discord", "api"]

GENERATION_STATUSES: Final = frozenset({"queued", "running", "succeeded", "failed", "canceled"})
ACTIVE_GENERATION_STATUSES: Final = ("queued", "running")
TRAINING_STATUSES: Final = frozenset({"starting", "processing", "succeeded", "failed", "canceled"})
ACTIVE_TRAINING_STATUSES: Final = ("starting", "processing")
SOURCES: Final = frozenset({"discord", "api"})


@dataclass(frozen=True, kw_only=True, slots=True)
class NewGeneration:
    """A generation request to persist. ``id`` and ``created_at`` are filled in if omitted."""

    user_key: str
    prompt: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    user_id: int | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    interaction_id: int | None = None
    source: Source = "discord"
    status: GenerationStatus = "queued"
    id: str | None = None
    created_at: datetime | None = None
    #: Estimated cost (USD), counted against budgets until the job's cost is known.
    cost_reserved: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Generation:
    id: str
    user_key: str
    user_id: int | None
    guild_id: int | None
    channel_id: int | None
    prompt: str
    model: str
    params: dict[str, Any]
    status: GenerationStatus
    error: str | None
    prediction_id: str | None
    seed: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    predict_time: float | None
    interaction_id: int | None
    result_message_id: int | None
    source: Source
    #: Queue order (admission order across every process).
    seq: int | None = None
    #: The process that runs the job, for as long as it renews the lease.
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    #: Images Replicate returned (what per-image models bill).
    image_count: int | None = None
    #: Estimated cost (USD) once the job ended, from the price table.
    cost_usd: float | None = None
    cost_reserved: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NewTraining:
    """A training to persist. ``id``, ``notice_nonce`` and ``created_at`` are generated if omitted.

    ``training_id`` (Replicate's id) is usually unknown yet: the row is written before the
    training is created on Replicate, so a crash in between leaves a trace to recover from.
    ``params`` holds the remaining inputs needed to (re)create the training.
    """

    user_key: str
    model_owner: str
    model_name: str
    trigger_word: str
    steps: int
    user_id: int | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    training_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    status: TrainingStatus = "starting"
    total_steps: int | None = None
    status_message_id: int | None = None
    source: Source = "discord"
    id: str | None = None
    notice_nonce: str | None = None
    created_at: datetime | None = None
    #: Estimated cost (USD), counted against budgets until the training's cost is known.
    cost_reserved: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Training:
    id: str
    training_id: str | None
    user_key: str
    user_id: int | None
    guild_id: int | None
    channel_id: int | None
    model_owner: str
    model_name: str
    trigger_word: str
    steps: int
    params: dict[str, Any]
    status: TrainingStatus
    step: int | None
    total_steps: int | None
    version: str | None
    weights: str | None
    error: str | None
    status_message_id: int | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    notified_at: datetime | None
    updated_at: datetime
    notice_nonce: str
    last_webhook_at: datetime | None
    last_polled_at: datetime | None
    last_status_edit_at: datetime | None
    source: Source
    #: The process starting it (upload, create), until Replicate's id is known.
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    #: Seconds of hardware time Replicate billed (``metrics.predict_time``).
    predict_time: float | None = None
    #: Estimated cost (USD) once the training ended, from the price table.
    cost_usd: float | None = None
    cost_reserved: float | None = None

    @property
    def model_ref(self) -> str:
        return f"{self.model_owner}/{self.model_name}"


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainedModel:
    owner: str
    name: str
    guild_id: int | None
    creator_key: str
    trigger_word: str
    latest_version: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def ref(self) -> str:
        """``owner/name``."""
        return f"{self.owner}/{self.name}"

    @property
    def version_ref(self) -> str | None:
        """``owner/name:version`` of the latest version, if there is one."""
        return f"{self.ref}:{self.latest_version}" if self.latest_version else None
