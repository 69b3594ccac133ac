"""What the Replicate layer hands back (plain frozen dataclasses) and the pure parsers
behind them: model references, trainer progress, timestamps."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.model_refs import MODEL_REF
from services.replicate.errors import InvalidModelError

DEFAULT_MODEL = "black-forest-labs/flux-schnell"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})

# tqdm-like progress: "label:  42%|####      | 420/1000 [05:01<06:55, 1.40it/s]"
_TQDM = re.compile(r"(?:^|\s|:)(?P<pct>\d{1,3})%\|.*?\|\s*(?P<n>\d+)/(?P<total>\d+)")


@dataclass(frozen=True)
class Account:
    username: str
    name: str
    type: str


@dataclass(frozen=True)
class ModelRef:
    owner: str
    name: str
    version: str | None = None

    @property
    def model(self) -> str:
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return f"{self.model}:{self.version}" if self.version else self.model


@dataclass(frozen=True)
class Progress:
    prediction_id: str
    status: str  # starting | processing | succeeded | failed | canceled
    elapsed: float  # seconds since the prediction was created


@dataclass(slots=True)
class PredictionData:
    """A prediction as Replicate's API (or a webhook delivery) gives it, the fields the
    bot reads, as they came: timestamps are ISO strings, ``output`` and ``metrics``
    plain JSON. Read without the official client's models, which validate every field
    of every prediction of every listing page."""

    id: str
    status: str
    model: str | None = None
    version: str | None = None
    input: dict[str, Any] | None = None
    output: Any = None
    logs: str | None = None
    error: str | None = None
    metrics: dict[str, Any] | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None

    @classmethod
    def of(cls, data: Any) -> PredictionData:
        """Raises ValueError for anything but a prediction's JSON object."""
        if not isinstance(data, dict):
            raise ValueError(f"a prediction is a JSON object, not {type(data).__name__}")
        id_, status = data.get("id"), data.get("status")
        if not isinstance(id_, str) or not isinstance(status, str):
            raise ValueError("a prediction has a string id and status")
        inputs, metrics, logs = data.get("input"), data.get("metrics"), data.get("logs")
        return cls(
            id=id_,
            status=status,
            model=_str_or_none(data.get("model")),
            version=_str_or_none(data.get("version")),
            input=inputs if isinstance(inputs, dict) else None,
            output=data.get("output"),
            logs=logs if isinstance(logs, str) else None,
            error=_text_or_none(data.get("error")),
            metrics=metrics if isinstance(metrics, dict) else None,
            created_at=_str_or_none(data.get("created_at")),
            started_at=_str_or_none(data.get("started_at")),
            completed_at=_str_or_none(data.get("completed_at")),
        )


@dataclass(frozen=True, slots=True)
class PredictionPage:
    """A page of the account's predictions, newest first; ``next`` is the next page's
    cursor."""

    results: list[PredictionData]
    next: str | None = None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _text_or_none(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes = field(repr=False)
    content_type: str
    filename: str

    def __repr__(self) -> str:
        return (
            f"GeneratedImage(filename={self.filename!r}, content_type={self.content_type!r}, "
            f"size={len(self.data)})"
        )


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    seed: int | None
    prediction_id: str
    model: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    queue_seconds: float | None = None  # created -> started
    total_seconds: float | None = None  # created -> completed
    predict_time: float | None = None  # metrics.predict_time, what Replicate bills
    #: The outputs' https URLs, one per image, while Replicate keeps them (an hour);
    #: empty when the outputs came inline.
    output_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class UploadedFile:
    id: str
    url: str
    size: int


@dataclass(frozen=True)
class TrainingState:
    id: str
    status: str
    step: int | None = None
    total: int | None = None
    version: str | None = None  # "owner/name:<64 hex>" once succeeded
    weights: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    predict_time: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


def parse_model_ref(ref: str) -> ModelRef:
    """Split ``owner/name`` or ``owner/name:<64 hex version>``."""
    match = MODEL_REF.fullmatch(ref.strip()) if isinstance(ref, str) else None
    if not match:
        raise InvalidModelError(f"invalid model reference: {str(ref)[:100]!r}")
    return ModelRef(match["owner"], match["name"], match["version"])


def parse_training_progress(logs: str | None) -> tuple[int, int] | None:
    """The last ``n/N`` step of a tqdm-like progress line in trainer logs.

    Lines whose label mentions training win over other bars (the trainer also shows
    bars for loading checkpoint shards or captioning before it starts training)."""
    if not logs:
        return None
    last_any: tuple[int, int] | None = None
    last_train: tuple[int, int] | None = None
    for line in re.split(r"[\r\n]+", logs):
        for match in _TQDM.finditer(line):
            n, total = int(match["n"]), int(match["total"])
            if total <= 0 or n > total:
                continue
            last_any = (n, total)
            if "train" in line[: match.start("pct")].lower():
                last_train = (n, total)
    return last_train or last_any


def parse_time(value: Any) -> datetime | None:
    """A timestamp of Replicate's (ISO 8601, maybe with ``Z``), or None."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())
