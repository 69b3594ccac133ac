"""Which models a generation may use: the configured ones (``GENERATE_MODELS``, or those
of them a server's admins chose), and the models trained through the bot, each in the
server it was trained in."""

from __future__ import annotations

from dataclasses import dataclass

from services.errors import UserFacingError
from services.guild_settings import GuildSettings
from services.replicate import ReplicateServiceError, parse_model_ref
from services.settings import Settings
from services.store import Store


@dataclass(frozen=True)
class ResolvedModel:
    ref: str
    trigger_word: str | None = None

    @property
    def trained(self) -> bool:
        return self.trigger_word is not None


class ModelCatalog:
    def __init__(
        self, settings: Settings, store: Store, guild_settings: GuildSettings | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.guild_settings = guild_settings

    async def configured(self, guild_id: int | None) -> list[str]:
        """The configured models offered in ``guild_id``, its default first."""
        if self.guild_settings is None or guild_id is None:
            return list(self.settings.generate_models)
        config = await self.guild_settings.config(guild_id)
        return [config.default_model, *(m for m in config.models if m != config.default_model)]

    async def choices(self, guild_id: int | None, current: str = "") -> list[tuple[str, str]]:
        """(label, value) pairs: configured models, then the guild's trained models."""
        needle = current.strip().lower()
        choices = [(m, m) for m in await self.configured(guild_id) if needle in m.lower()]
        for model in await self.store.models_for_guild(guild_id, limit=25):
            value = f"{model.owner}/{model.name}"
            if needle in value.lower() and all(value != v for _, v in choices):
                label = f"{value} (trained, trigger word {model.trigger_word})"
                choices.append((label[:100], value))
        return choices[:25]

    async def resolve(self, model: str | None, guild_id: int | None) -> ResolvedModel:
        """The model to run for what the user asked (the default when nothing); a trained
        model resolves to its latest version and brings its trigger word."""
        configured = await self.configured(guild_id)
        if not model:
            return ResolvedModel(configured[0])
        model = model.strip()
        if model in configured:
            return ResolvedModel(model)
        try:
            ref = parse_model_ref(model)
        except ReplicateServiceError:
            ref = None
        if ref is not None:
            trained = await self.store.get_model(ref.owner, ref.name)
            if (
                trained is not None
                and trained.latest_version
                and (trained.guild_id in (None, guild_id))
            ):
                version = ref.version or trained.latest_version.rpartition(":")[2]
                return ResolvedModel(
                    f"{ref.owner}/{ref.name}:{version}", trigger_word=trained.trigger_word
                )
        valid = ", ".join(f"`{v}`" for _, v in (await self.choices(guild_id))[:10])
        raise UserFacingError(f"Unknown model `{model[:100]}`. Models you can use: {valid}.")
