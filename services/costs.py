"""What a job costs, estimated from a price table (``services/prices.json``, or
``PRICES_FILE`` on top of it).

Replicate bills the official FLUX models (and the upscaler) per output image, and every
other model (a trained LoRA version, a community model) and every training per second
of the hardware it runs on: ``metrics.predict_time``. Costs here are estimates: prices
change, and Replicate's invoice is what counts.

Before a job runs, :meth:`PriceTable.estimate_generation` / :meth:`estimate_training`
give what it will probably cost: budgets count that until the real figure is known.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SHIPPED_PRICES = Path(__file__).with_name("prices.json")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrice(_Strict):
    """Per output image, or per second of ``hardware`` (with a guess of the seconds an
    image takes, for estimates before the run)."""

    per_image: float | None = Field(default=None, ge=0)
    hardware: str | None = None
    estimate_seconds_per_image: float = Field(default=4.0, ge=0)

    @model_validator(mode="after")
    def _one_way(self) -> ModelPrice:
        if (self.per_image is None) == (self.hardware is None):
            raise ValueError("a model price needs either per_image or hardware")
        return self


class TrainingPrice(_Strict):
    hardware: str
    estimate_seconds_per_step: float = Field(default=1.2, ge=0)


class PriceTable(_Strict):
    about: str = ""
    hardware_per_second: dict[str, float]
    models: dict[str, ModelPrice]
    other_models: ModelPrice
    trainings: TrainingPrice

    @model_validator(mode="after")
    def _known_hardware(self) -> PriceTable:
        named = [p.hardware for p in (*self.models.values(), self.other_models)]
        for hardware in (*named, self.trainings.hardware):
            if hardware is not None and hardware not in self.hardware_per_second:
                raise ValueError(f"hardware {hardware!r} has no price in hardware_per_second")
        if any(price < 0 for price in self.hardware_per_second.values()):
            raise ValueError("hardware prices must not be negative")
        return self

    def model_price(self, model: str) -> ModelPrice:
        """The price of ``owner/name`` (a version after ``:`` is ignored)."""
        return self.models.get(model.partition(":")[0], self.other_models)

    def per_image(self, model: str) -> bool:
        return self.model_price(model).per_image is not None

    def _per_second(self, hardware: str | None) -> float:
        return self.hardware_per_second[hardware or self.other_models.hardware or ""]

    def generation_cost(self, model: str, images: int, predict_time: float | None) -> float:
        """The estimated cost of a finished prediction of ``model``."""
        price = self.model_price(model)
        if price.per_image is not None:
            return round(price.per_image * max(0, images), 6)
        return round(self._per_second(price.hardware) * max(0.0, predict_time or 0.0), 6)

    def estimate_generation(self, model: str, images: int) -> float:
        """What a prediction of ``images`` images will probably cost, before it runs."""
        price = self.model_price(model)
        if price.per_image is not None:
            return round(price.per_image * images, 6)
        seconds = price.estimate_seconds_per_image * images
        return round(self._per_second(price.hardware) * seconds, 6)

    def training_cost(self, predict_time: float | None) -> float:
        return round(self._per_second(self.trainings.hardware) * max(0.0, predict_time or 0.0), 6)

    def estimate_training(self, steps: int) -> float:
        seconds = self.trainings.estimate_seconds_per_step * steps
        return round(self._per_second(self.trainings.hardware) * seconds, 6)


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra``'s entries replace ``base``'s; the two tables of entries are merged."""
    merged = {**base, **extra}
    for table in ("hardware_per_second", "models"):
        merged[table] = {**base.get(table, {}), **extra.get(table, {})}
    return merged


@cache
def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SHIPPED_PRICES.read_text(encoding="utf-8"))
    return data


def load_prices(path: Path | None = None) -> PriceTable:
    """The shipped table, with the entries of ``path`` (``PRICES_FILE``) over it.

    Raises ``ValueError`` with one line that says what is wrong with the file."""
    data = _shipped()
    if path is not None:
        try:
            extra = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise ValueError(f"{path} must hold a JSON object")
        data = _merged(data, extra)
    try:
        return PriceTable.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        reason = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"{where + ': ' if where else ''}{reason}") from None


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The start of ``now``'s month (UTC) and the start of the next one."""
    now = now.astimezone(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def usd(amount: float) -> str:
    """An amount for people: cents, or tenths of a cent below a dollar."""
    if abs(amount) >= 1 or amount == 0:
        return f"${amount:,.2f}"
    if abs(amount) < 0.0001:
        return "<$0.0001"
    whole, _, decimals = f"{amount:.4f}".partition(".")
    return f"${whole}.{decimals.rstrip('0').ljust(2, '0')}"
