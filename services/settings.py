"""The one typed settings object, read from the environment and ``.env``.

Validated once at start; :func:`load_settings` turns the first problem into a
:class:`SettingsError` whose message names the variable and how to fix it. Secrets are
``SecretStr`` so that ``repr``, logs and error messages show ``**********``.
"""

from __future__ import annotations

import logging
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


class SettingsError(Exception):
    """A missing or invalid setting; ``str()`` is one line fit for an operator."""


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

    generate_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["black-forest-labs/flux-schnell"]
    )
    generate_cooldown_seconds: float = Field(default=10.0, ge=0, le=86400, allow_inf_nan=False)
    max_concurrent_generations: int = Field(default=4, ge=1, le=1000)
    max_queued_generations: int = Field(default=20, ge=0, le=10000)
    generations_per_user_per_day: int = Field(default=100, ge=0)
    max_output_mb: int = Field(default=50, ge=1, le=500)
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

    public_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535)
    api_token: SecretStr | None = None
    train_data_dir: Path = Path("data/train")
    #: Retired: jobs are owned by leases now. Still accepted (with a warning at start).
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    job_lease_seconds: float = Field(default=30.0, ge=2, le=3600, allow_inf_nan=False)

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

    @field_validator("generate_models")
    @classmethod
    def _models_shape(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one model, like black-forest-labs/flux-schnell")
        for ref in value:
            if not MODEL_REF.fullmatch(ref):
                raise ValueError(f"{ref[:100]!r} is not owner/name or owner/name:<64 hex version>")
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

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
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


def _describe(err: ValidationError) -> str:
    first = err.errors(include_input=False, include_url=False)[0]
    name = "_".join(str(part) for part in first["loc"] if isinstance(part, str)).upper()
    hint = _HINTS.get(name)
    if first["type"] == "missing":
        where = f": set it to {hint}" if hint else ""
        return f"{name} is not set{where}, in the environment or in .env (see .env.example)."
    reason = first["msg"].removeprefix("Value error, ")
    if not name:
        return f"Invalid settings: {reason}."
    return f"{name} is invalid: {reason}. Fix it in the environment or in .env (see .env.example)."


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
        raise SettingsError(_describe(err)) from None


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


def configure_logging(level: str, secrets: list[str]) -> None:
    """Log to stderr with timestamps; any secret that slips into a record is masked."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if any(s in message for s in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "**********")
            record.msg, record.args = message, None
        return True
