"""The one typed settings object, read from the environment and ``.env``.

Validated once at start; :func:`load_settings` turns every problem into one
:class:`SettingsError` whose message names each variable and how to fix it. Secrets are
``SecretStr`` so that ``repr``, logs and error messages show ``**********``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.model_refs import MODEL_REF, OWNER

DEFAULT_TRAINER_VERSION = (
    "ostris/flux-dev-lora-trainer:e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497"
)
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9")

_HINTS: dict[str, str] = {
    "DISCORD_TOKEN": "the bot token from the Discord developer portal (Bot > Reset Token)",
    "REPLICATE_API_TOKEN": "an API token from replicate.com/account/api-tokens",
    "DISCORD_GUILD_ID": "a server id (a number; enable Developer Mode, right-click the server)",
    "DATABASE_URL": "for example sqlite:///data/bot.sqlite3",
}


#: Settings where a blank value means "nothing" (turned off) rather than the default.
_BLANK_IS_EMPTY = frozenset({"train_sample_prompt"})


class SettingsError(Exception):
    """Missing or invalid settings: ``problems`` has one line for each, ``str()`` is one
    line fit for an operator (the first problem, and the names of the others), and
    :meth:`report` lists them all, so that a new ``.env`` is fixed in one go."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        others = [problem.split(" ", 1)[0] for problem in problems[1:]]
        text = _describe(problems[0])
        if others:
            text += f" Also to fix: {', '.join(others)}."
        super().__init__(text)

    def report(self) -> str:
        if len(self.problems) == 1:
            return str(self)
        lines = [f"{len(self.problems)} settings need fixing, {WHERE}:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    discord_token: SecretStr
    discord_guild_id: int | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"

    replicate_api_token: SecretStr
    replicate_base_url: str | None = None
    replicate_owner: str | None = None
    replicate_outage_seconds: float = Field(default=60.0, gt=0, le=3600, allow_inf_nan=False)

    database_url: str = "sqlite:///data/bot.sqlite3"
    log_level: str = "INFO"
    log_level_all: str | None = None

    generate_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["black-forest-labs/flux-schnell"]
    )
    generate_cooldown_seconds: float = Field(default=10.0, ge=0, le=86400, allow_inf_nan=False)
    progress_after_seconds: float = Field(default=5.0, ge=0, le=60, allow_inf_nan=False)
    max_concurrent_generations: int = Field(default=4, ge=1, le=1000)
    max_queued_generations: int = Field(default=20, ge=0, le=10000)
    generations_per_user_per_day: int = Field(default=100, ge=0)
    max_output_mb: int = Field(default=50, ge=1, le=500)
    upscale_model: str = "nightmareai/real-esrgan"
    upscale_scale: float = Field(default=2.0, gt=0, le=10, allow_inf_nan=False)
    vary_model: str = "black-forest-labs/flux-dev"
    vary_strength: float = Field(default=0.6, ge=0, le=1, allow_inf_nan=False)
    max_input_image_mb: int = Field(default=20, ge=1, le=100)
    #: ``{trigger}`` is replaced by the trigger word; empty: no sample.
    train_sample_prompt: str = Field(default="a photo of {trigger}", max_length=1000)
    shutdown_grace_seconds: float = Field(default=8.0, ge=0, le=600, allow_inf_nan=False)

    train_role_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    trainings_per_user_per_day: int = Field(default=3, ge=0)
    max_active_trainings_per_guild: int = Field(default=2, ge=1)
    trainer_version: str = DEFAULT_TRAINER_VERSION
    max_train_zip_mb: int = Field(default=100, ge=1, le=100)
    min_train_images: int = Field(default=1, ge=1)
    max_train_images: int = Field(default=200, ge=1, le=1000)
    training_status_edit_seconds: float = Field(default=10.0, ge=0, le=3600, allow_inf_nan=False)
    training_poll_seconds: float = Field(default=30.0, gt=0, le=86400, allow_inf_nan=False)
    max_concurrent_zip_checks: int = Field(default=2, ge=1, le=64)

    public_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535)
    api_token: SecretStr | None = None
    train_data_dir: Path = Path("data/train")
    #: Retired: jobs are owned by leases now. Still accepted (with a warning at start).
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    job_lease_seconds: float = Field(default=30.0, ge=2, le=3600, allow_inf_nan=False)
    #: Discord shards in all (every process the same); unset: Discord's recommended count.
    shard_count: int | None = Field(default=None, ge=1, le=100_000)
    #: The shards this process runs; unset: all of them.
    shard_ids: Annotated[list[int] | None, NoDecode] = None

    #: Each server's monthly budget unless its admins set a lower one (0: none).
    guild_monthly_budget_usd: float = Field(default=0.0, ge=0, le=1_000_000, allow_inf_nan=False)
    #: A JSON price table whose entries replace the shipped ones (services/prices.json).
    prices_file: Path | None = None
    #: Bearer token that GET /metrics requires (unset: open).
    metrics_token: SecretStr | None = None

    @field_validator("generate_models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("train_role_ids", mode="before")
    @classmethod
    def _roles(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shards(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("shard_ids")
    @classmethod
    def _shard_list(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one shard id, like 0,1")
        if len(set(value)) != len(value):
            raise ValueError("lists a shard id twice")
        return sorted(value)

    @field_validator("generate_models")
    @classmethod
    def _models_shape(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one model, like black-forest-labs/flux-schnell")
        for ref in value:
            if not MODEL_REF.fullmatch(ref):
                raise ValueError(f"{ref[:100]!r} is not owner/name or owner/name:<64 hex version>")
        return value

    @field_validator("upscale_model", "vary_model")
    @classmethod
    def _action_model(cls, value: str) -> str:
        value = value.strip()
        if not MODEL_REF.fullmatch(value):
            raise ValueError(f"{value[:100]!r} is not owner/name or owner/name:<64 hex version>")
        return value

    @field_validator("trainer_version")
    @classmethod
    def _trainer(cls, value: str) -> str:
        match = MODEL_REF.fullmatch(value)
        if not match or not match["version"]:
            raise ValueError("must be owner/name:<64 hex version>")
        return value

    @field_validator("replicate_owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        if value is not None and not OWNER.fullmatch(value):
            raise ValueError("must be a Replicate username (letters, digits, '-', '_', '.')")
        return value

    @field_validator("log_level", "log_level_all")
    @classmethod
    def _level(cls, value: str | None) -> str | None:
        if value is None:
            return None
        upper = value.strip().upper()
        if upper not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper

    @field_validator("discord_token", "replicate_api_token")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # None only where the token is optional (see load_settings(require_discord=False)).
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty")
        return value

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        """``NAME=`` (as in a copied .env.example) means "use the default"; a blank
        required value is still reported as empty."""
        if not isinstance(data, dict):
            return data
        return {
            key: value
            for key, value in data.items()
            if not (
                isinstance(value, str)
                and not value.strip()
                and key in cls.model_fields
                and key not in _BLANK_IS_EMPTY
                and not cls.model_fields[key].is_required()
            )
        }

    @field_validator("database_url")
    @classmethod
    def _db(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+asyncpg:", "postgres:")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("discord_api_base", "discord_gateway_url", "replicate_base_url", "public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError("must be a full URL, like https://example.com")
        return value

    @field_validator("prices_file")
    @classmethod
    def _prices(cls, value: Path | None) -> Path | None:
        if value is not None:
            from services.costs import load_prices

            load_prices(value)
        return value

    @model_validator(mode="after")
    def _shard_range(self) -> Settings:
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError(
                "SHARD_IDS needs SHARD_COUNT (the number of shards in all, the same in every "
                "process)"
            )
        wrong = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
        if wrong:
            raise ValueError(
                f"SHARD_IDS has {', '.join(map(str, wrong))}: shard ids run from 0 to "
                f"{self.shard_count - 1} (SHARD_COUNT={self.shard_count})"
            )
        return self

    @model_validator(mode="after")
    def _images_range(self) -> Settings:
        if self.min_train_images > self.max_train_images:
            raise ValueError("MIN_TRAIN_IMAGES must not exceed MAX_TRAIN_IMAGES")
        return self

    @property
    def webhook_url(self) -> str | None:
        """Where Replicate sends job events: only with PUBLIC_URL (else jobs are polled)."""
        base = self.public_url
        return f"{base.rstrip('/')}/webhooks/replicate" if base else None

    @property
    def web_enabled(self) -> bool:
        """The web server runs when a port is set, or when webhooks need a receiver."""
        return self.http_port is not None or self.public_url is not None

    @property
    def web_port(self) -> int:
        return 8080 if self.http_port is None else self.http_port


WHERE = "in the environment or in .env (see .env.example)"


def _problems(err: ValidationError) -> list[str]:
    """One short line per missing or invalid setting, in the order they are defined."""
    problems = []
    for error in err.errors(include_input=False, include_url=False):
        name = "_".join(str(part) for part in error["loc"] if isinstance(part, str)).upper()
        hint = _HINTS.get(name)
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing" or reason == "is empty":
            state = "is not set" if error["type"] == "missing" else "is empty"
            problems.append(f"{name} {state}: set it to {hint}" if hint else f"{name} {state}")
        elif not name:
            problems.append(f"Invalid settings: {reason}")
        else:
            problems.append(f"{name} is invalid: {reason}")
    return problems


def _describe(problem: str) -> str:
    if problem.startswith("Invalid settings"):
        return f"{problem}."
    if " is not set" in problem or " is empty" in problem:
        return f"{problem}, {WHERE}."
    return f"{problem}. Fix it {WHERE}."


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    env_file: str | Path | None = ".env",
    require_discord: bool = True,
) -> Settings:
    """Read and validate the settings.

    ``env`` replaces the process environment (tests); ``env_file=None`` ignores ``.env``.
    ``require_discord=False`` (the web server alone, ``--http-only``) makes
    ``DISCORD_TOKEN`` optional: ``settings.discord_token`` may then be ``None``.
    """
    try:
        if env is None:
            cls = Settings if require_discord else _SettingsWithoutDiscord
            return cls(_env_file=env_file)  # type: ignore[call-arg]
        data = {k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
        if env_file is not None and Path(env_file).is_file():
            from dotenv import dotenv_values

            file_values = {
                k.lower(): v
                for k, v in dotenv_values(env_file).items()
                if v is not None and k.lower() in Settings.model_fields
            }
            data = {**file_values, **data}
        if not require_discord:
            return _SettingsFromDictWithoutDiscord(**data)
        return _SettingsFromDict(**data)
    except ValidationError as err:
        raise SettingsError(_problems(err)) from None


class _SettingsFromDict(Settings):
    """Settings fed from an explicit mapping only (no environment, no .env)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        return (init_settings,)


class _SettingsWithoutDiscord(Settings):
    """Settings of the web server alone: no Discord token needed (blank counts as unset,
    as ``.env.example`` leaves it)."""

    discord_token: SecretStr | None = None  # type: ignore[assignment]

    @field_validator("discord_token", mode="before")
    @classmethod
    def _blank_token(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class _SettingsFromDictWithoutDiscord(_SettingsFromDict):
    discord_token: SecretStr | None = None  # type: ignore[assignment]

    @field_validator("discord_token", mode="before")
    @classmethod
    def _blank_token(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value
