"""Per-server settings: what a server's admins chose, within what the owner set.

The owner sets every limit in the environment; a server's admins may only tighten it
(a longer cooldown, a smaller quota or budget, fewer models, fewer channels or roles).
A server's values live in the store and are checked against the environment both when
they are set (out of range is refused, with the range) and when they are read (an
owner who tightens the environment later tightens every server with it).

Every process reads a server's values from the store; where the store's change notices
reach every process (PostgreSQL), each keeps them in memory until a notice says they
changed, so a change applies at once everywhere either way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from services.errors import UserFacingError
from services.settings import Settings
from services.store import Store
from services.store.events import EVERYTHING
from services.store.guild_settings import SettingsChange

log = logging.getLogger(__name__)

SettingKind = Literal["models", "model", "seconds", "count", "usd", "roles", "channels", "channel"]

#: Highest values where the owner set no limit.
MAX_COOLDOWN: Final = 86400.0
MAX_PER_DAY: Final = 100_000
MAX_BUDGET: Final = 1_000_000.0


@dataclass(frozen=True, slots=True)
class SettingSpec:
    name: str
    label: str
    kind: SettingKind
    #: The environment variable the owner's default comes from, if any.
    env: str | None
    help: str


SPECS: Final[tuple[SettingSpec, ...]] = (
    SettingSpec(
        "models",
        "Models offered",
        "models",
        "GENERATE_MODELS",
        "models /generate offers, comma-separated (some of the owner's)",
    ),
    SettingSpec(
        "default_model",
        "Default model",
        "model",
        "GENERATE_MODELS",
        "the model /generate uses when none is picked (one of the models offered)",
    ),
    SettingSpec(
        "cooldown",
        "Cooldown",
        "seconds",
        "GENERATE_COOLDOWN_SECONDS",
        "seconds a member waits between two generations",
    ),
    SettingSpec(
        "generations_per_day",
        "Generations per member per day",
        "count",
        "GENERATIONS_PER_USER_PER_DAY",
        "generations a member may start per UTC day",
    ),
    SettingSpec(
        "trainings_per_day",
        "Trainings per member per day",
        "count",
        "TRAININGS_PER_USER_PER_DAY",
        "trainings a member may start per UTC day",
    ),
    SettingSpec(
        "train_roles",
        "Roles allowed to train",
        "roles",
        "TRAIN_ROLE_IDS",
        "roles whose members may use /train (mentions or ids)",
    ),
    SettingSpec(
        "channels",
        "Channels where the bot works",
        "channels",
        None,
        "channels where the bot's commands work (mentions or ids); unset: everywhere",
    ),
    SettingSpec(
        "budget",
        "Monthly budget (USD)",
        "usd",
        "GUILD_MONTHLY_BUDGET_USD",
        "estimated spend per month after which new jobs are refused",
    ),
    SettingSpec(
        "budget_channel",
        "Budget notices channel",
        "channel",
        None,
        "where admins are told the budget is used up; unset: the system channel",
    ),
)
BY_NAME: Final = {spec.name: spec for spec in SPECS}


def spec_of(name: str) -> SettingSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        names = ", ".join(f"`{s.name}`" for s in SPECS)
        raise UserFacingError(f"There is no setting `{name[:40]}`. Settings: {names}.") from None


@dataclass(frozen=True)
class GuildConfig:
    """What applies in one server (``guild_id`` None: outside servers, the owner's values)."""

    guild_id: int | None
    models: tuple[str, ...]
    default_model: str
    cooldown: float
    generations_per_day: int
    trainings_per_day: int
    #: The server's own roles allowed to train (empty: only the owner's rule applies).
    train_roles: tuple[int, ...]
    #: Channels where the bot works (empty: everywhere).
    channels: tuple[int, ...]
    #: Monthly budget in USD (0: none).
    budget: float
    budget_channel: int | None
    #: What the server's admins set, by setting name.
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        return getattr(self, name)

    def from_server(self, name: str) -> bool:
        return name in self.overrides

    def works_in(self, channel_id: int | None) -> bool:
        return not self.channels or channel_id in self.channels


def _per_day_range(env: int) -> tuple[int, int]:
    return (1, env) if env else (0, MAX_PER_DAY)


def _budget_range(env: float) -> tuple[float, float]:
    return (0.01, env) if env else (0.01, MAX_BUDGET)


class GuildSettings:
    """Read, change and reset the settings of servers; see the module's doc."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._cache: dict[int, GuildConfig] = {}
        self._reading: dict[int, asyncio.Future[GuildConfig]] = {}
        #: How many changes this process has heard of (reads older than one are not kept).
        self._changes = 0
        self._unsubscribe = store.events.subscribe(self._on_notice)

    # -- reading ---------------------------------------------------------------

    async def config(self, guild_id: int | None) -> GuildConfig:
        """What applies in ``guild_id`` now."""
        if guild_id is None:
            return self.resolve(None, {})
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        # Requests that arrive together (a burst of commands) share one read.
        reading = self._reading.get(guild_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(guild_id))
            self._reading[guild_id] = reading
            reading.add_done_callback(lambda done: self._forget_read(guild_id, done))
        return await asyncio.shield(reading)

    async def _read(self, guild_id: int) -> GuildConfig:
        changes = self._changes
        overrides = await self.store.get_guild_settings(guild_id)
        config = self.resolve(guild_id, overrides)
        # Kept only if no change was heard of meanwhile (it may predate the change).
        if self.store.events.shared and changes == self._changes:
            self._cache[guild_id] = config
        return config

    def _forget_read(self, guild_id: int, done: asyncio.Future[GuildConfig]) -> None:
        if self._reading.get(guild_id) is done:
            del self._reading[guild_id]

    def _on_notice(self, topic: str) -> None:
        if topic == EVERYTHING:
            self._changes += 1
            self._cache.clear()
            self._reading.clear()
            return
        kind, _, guild = topic.partition(":")
        if kind == "settings" and guild.isdigit():
            self._changes += 1
            self._cache.pop(int(guild), None)
            self._reading.pop(int(guild), None)

    def resolve(self, guild_id: int | None, overrides: Mapping[str, Any]) -> GuildConfig:
        """The owner's values tightened by ``overrides`` (values out of the owner's
        range, as after the environment changed, are brought back into it)."""
        s = self.settings
        env_models = tuple(s.generate_models)
        models = tuple(m for m in overrides.get("models") or () if m in env_models) or env_models
        default = overrides.get("default_model")
        if default not in models:
            default = models[0]
        return GuildConfig(
            guild_id=guild_id,
            models=models,
            default_model=default,
            cooldown=max(s.generate_cooldown_seconds, float(overrides.get("cooldown") or 0.0)),
            generations_per_day=self._per_day(
                s.generations_per_user_per_day, overrides.get("generations_per_day")
            ),
            trainings_per_day=self._per_day(
                s.trainings_per_user_per_day, overrides.get("trainings_per_day")
            ),
            train_roles=tuple(int(r) for r in overrides.get("train_roles") or ()),
            channels=tuple(int(c) for c in overrides.get("channels") or ()),
            budget=self._budget(overrides.get("budget")),
            budget_channel=_int_or_none(overrides.get("budget_channel")),
            overrides=dict(overrides),
        )

    @staticmethod
    def _per_day(env: int, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            return env
        if env == 0:
            return max(0, value)
        return env if value <= 0 else min(value, env)

    def _budget(self, value: Any) -> float:
        env = self.settings.guild_monthly_budget_usd
        if not isinstance(value, int | float) or value <= 0:
            return env
        return min(float(value), env) if env else float(value)

    # -- ranges and parsing ----------------------------------------------------

    def allowed(self, name: str) -> str:
        """What ``name`` may be set to here, for people."""
        s = self.settings
        spec = spec_of(name)
        if spec.kind == "models":
            listed = ", ".join(f"`{m}`" for m in s.generate_models)
            return f"one or more of {listed}" if len(listed) <= 300 else "some of GENERATE_MODELS"
        if spec.kind == "model":
            return "one of the models offered in this server"
        if spec.kind == "seconds":
            return f"{s.generate_cooldown_seconds:g} to {MAX_COOLDOWN:g} seconds"
        if spec.kind == "count":
            env = getattr(s, _ENV_FIELD[name])
            low, high = _per_day_range(env)
            return f"{low} to {high}" + (" (0 = unlimited)" if low == 0 else "")
        if spec.kind == "usd":
            low, high = _budget_range(s.guild_monthly_budget_usd)
            return f"{low:.2f} to {high:,.2f} USD"
        if spec.kind == "roles":
            return "one or more roles of this server"
        if spec.kind == "channels":
            return "one or more channels of this server"
        return "a channel of this server"

    def parse(self, name: str, text: str) -> Any:
        """The value of ``name`` written as ``text``; raises UserFacingError with the
        allowed range. Roles and channels are read by the front end, which knows them."""
        spec = spec_of(name)
        text = text.strip()
        if spec.kind == "models":
            return [m for m in re.split(r"[\s,]+", text) if m]
        if spec.kind == "model":
            return text
        if spec.kind in ("roles", "channels", "channel"):
            raise TypeError(f"{name} is read by the front end")
        try:
            if spec.kind == "seconds":
                return _seconds(text)
            if spec.kind == "count":
                return 0 if text.lower() == "unlimited" else int(text)
            return float(text.removeprefix("$").replace(",", "").strip())
        except ValueError:
            raise UserFacingError(
                f"`{text[:40]}` is not a valid {spec.label.lower()}: use {self.allowed(name)}."
            ) from None

    def check(self, name: str, value: Any, current: GuildConfig) -> Any:
        """``value`` as it will be stored, if the owner's limits allow it; else a
        UserFacingError that gives the allowed range."""
        spec = spec_of(name)
        s = self.settings
        refused = UserFacingError(
            f"{spec.label} can't be set to {_shown(value)}: use {self.allowed(name)}."
        )
        if spec.kind == "models":
            models = list(dict.fromkeys(value))
            if not models or any(m not in s.generate_models for m in models):
                raise refused
            return models
        if spec.kind == "model":
            if value not in current.models:
                offered = ", ".join(f"`{m}`" for m in current.models)
                raise UserFacingError(
                    f"{spec.label} can't be `{str(value)[:100]}`: use one of the models "
                    f"offered in this server ({offered})."
                )
            return value
        if spec.kind == "seconds":
            if not math.isfinite(value) or not s.generate_cooldown_seconds <= value <= MAX_COOLDOWN:
                raise refused
            return float(value)
        if spec.kind == "count":
            low, high = _per_day_range(getattr(s, _ENV_FIELD[name]))
            if not low <= value <= high:
                raise refused
            return int(value)
        if spec.kind == "usd":
            low, high = _budget_range(s.guild_monthly_budget_usd)
            if not math.isfinite(value) or not low <= value <= high:
                raise refused
            return round(float(value), 2)
        if spec.kind in ("roles", "channels"):
            ids = list(dict.fromkeys(int(v) for v in value))
            if not ids:
                raise refused
            return ids
        return int(value)

    # -- changing --------------------------------------------------------------

    async def set(self, guild_id: int, name: str, value: Any, *, user_id: int) -> GuildConfig:
        """Check ``value`` against the owner's limits and store it for the server."""
        current = await self.config(guild_id)
        stored = self.check(name, value, current)
        return await self._change(guild_id, {name: stored}, user_id)

    async def reset(self, guild_id: int, name: str | None, *, user_id: int) -> GuildConfig:
        """Back to the owner's value: ``name``, or every setting when None."""
        names = [spec_of(name).name] if name is not None else [s.name for s in SPECS]
        return await self._change(guild_id, dict.fromkeys(names), user_id)

    async def _change(self, guild_id: int, changes: dict[str, Any], user_id: int) -> GuildConfig:
        overrides = await self.store.change_guild_settings(
            guild_id, changes, user_id=user_id, now=datetime.now(UTC)
        )
        self._changes += 1
        self._cache.pop(guild_id, None)
        self._reading.pop(guild_id, None)
        # Other processes hear of it before the admin is told it is done.
        await self.store.events.flush()
        log.info("settings of guild %s changed by %s: %s", guild_id, user_id, sorted(changes))
        return self.resolve(guild_id, overrides)

    async def history(self, guild_id: int, limit: int = 15) -> list[SettingsChange]:
        return await self.store.settings_changes(guild_id, limit)

    async def last_changes(self, guild_id: int) -> dict[str, SettingsChange]:
        """The newest change of each setting the server has changed (who, when)."""
        latest: dict[str, SettingsChange] = {}
        for change in await self.store.settings_changes(guild_id, 200):
            latest.setdefault(change.name, change)
        return latest

    def close(self) -> None:
        self._unsubscribe()


_ENV_FIELD: Final = {
    "generations_per_day": "generations_per_user_per_day",
    "trainings_per_day": "trainings_per_user_per_day",
}

_UNITS: Final = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.lower())
    if not match or match[2] not in _UNITS:
        raise ValueError(text)
    return float(match[1]) * _UNITS[match[2]]


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value)[:300] or "nothing"
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{str(value)[:100]}`"


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None
