"""Discord-side pieces shared by the cogs and bot.py (not an extension: no setup())."""

from __future__ import annotations

import logging
import re
import secrets
from typing import TYPE_CHECKING, Any, ClassVar

import discord
from discord import app_commands
from discord.ext import commands

from cogs._messages import neutral, respond
from services.log_context import current_shard, shard_of

if TYPE_CHECKING:
    from bot import ImageBot

log = logging.getLogger(__name__)


def bot_of(interaction: discord.Interaction) -> ImageBot:
    """The bot that received ``interaction`` (its services, its cogs)."""
    return interaction.client  # type: ignore[return-value]


def user_key(user: discord.abc.User) -> str:
    """The key under which a Discord user's quotas and records are kept."""
    return f"discord:{user.id}"


class Refused(app_commands.CheckFailure):
    """A check said no; ``user_message`` says why and, where it helps, when to retry."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


def user_message_of(error: BaseException) -> str | None:
    """The text meant for the user, for errors of the project's own kinds."""
    message = getattr(error, "user_message", None)
    return message if isinstance(message, str) and message else None


async def send_ephemeral(interaction: discord.Interaction, text: str) -> None:
    """Answer privately whether or not the interaction was already answered. ``text``
    may quote the user (a model name, a file name): its mentions are neutralised."""
    try:
        await respond(interaction, neutral(text)[:2000], ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not send an error reply for interaction %s: %s", interaction.id, exc)


def _describe_known(error: BaseException) -> str | None:
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: you can use this again in {error.retry_after:.0f} s."
    if isinstance(error, (app_commands.MissingRole, app_commands.MissingAnyRole)):
        return "You don't have the role needed to use this command."
    if isinstance(error, app_commands.MissingPermissions):
        perms = ", ".join(p.replace("_", " ") for p in error.missing_permissions)
        return f"You need the {perms} permission to do this."
    if isinstance(error, app_commands.BotMissingPermissions):
        perms = ", ".join(p.replace("_", " ").title() for p in error.missing_permissions)
        return f"I need the {perms} permission in this channel."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.TransformerError):
        return f"That value is not valid: {str(error.value)[:100]!r}."
    if isinstance(error, app_commands.CheckFailure):
        return user_message_of(error) or "You can't use this command here."
    return user_message_of(error)


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """The one place where errors from commands and buttons become replies."""
    original = error
    while isinstance(original, (app_commands.CommandInvokeError, commands.CommandInvokeError)):
        original = original.original
    text = _describe_known(original)
    if text is None:
        error_id = secrets.token_hex(4)
        where = interaction.command.qualified_name if interaction.command else "a component"
        log.error(
            "unhandled error %s in %s",
            error_id,
            where,
            exc_info=(type(original), original, original.__traceback__),
        )
        text = f"Sorry, something went wrong on my side (error id `{error_id}`)."
    await send_ephemeral(interaction, text)


def note_shard(interaction: discord.Interaction) -> None:
    """Name the interaction's shard on every log line of its handling (and of the tasks
    it starts)."""
    client = interaction.client
    current_shard.set(shard_of(interaction.guild_id, getattr(client, "shard_count", None) or 1))


#: Commands that work in every channel, whatever a server's allow-list says (so that its
#: admins can always change it).
EVERYWHERE = frozenset({"settings"})


async def check_channel(interaction: discord.Interaction) -> bool:
    """A server's commands work in the channels its settings allow (all, by default);
    elsewhere the reply says where they work."""
    if interaction.guild_id is None or interaction.type is discord.InteractionType.autocomplete:
        return True
    if (interaction.data or {}).get("name") in EVERYWHERE:
        return True
    config = await bot_of(interaction).services.guild_settings.config(interaction.guild_id)
    parent = getattr(interaction.channel, "parent_id", None)
    if config.works_in(interaction.channel_id) or (parent and config.works_in(parent)):
        return True
    where = ", ".join(f"<#{channel}>" for channel in config.channels)
    raise Refused(f"I don't work in this channel. In this server, use me in {where}.")


class BotTree(app_commands.CommandTree):
    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        note_shard(interaction)
        try:
            return await check_channel(interaction)
        except app_commands.AppCommandError:
            raise
        except Exception as exc:  # the tree would drop it without an answer
            await report_error(interaction, exc)
            return False

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await report_error(interaction, error)


DynamicButton = discord.ui.DynamicItem[discord.ui.Button]


class IdButton:
    """Mixin for persistent buttons whose ``custom_id`` is ``<prefix>:<action>:<id>``.

    Subclass together with ``discord.ui.DynamicItem[discord.ui.Button]`` and a matching
    ``template``; register the subclasses with ``bot.add_dynamic_items`` so they keep
    working after a restart. Errors in ``run`` go through :func:`report_error`."""

    prefix: ClassVar[str] = ""
    action: ClassVar[str] = ""
    label: ClassVar[str] = ""
    style: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary
    emoji: ClassVar[str | None] = None

    def __init__(self, job_id: str) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=self.label,
            style=self.style,
            emoji=self.emoji,
            custom_id=f"{self.prefix}:{self.action}:{job_id}",
        )
        super().__init__(button)  # type: ignore[call-arg]
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> Any:
        return cls(match["id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        note_shard(interaction)
        try:
            await self.run(interaction)
        except Exception as exc:
            await report_error(interaction, exc)

    async def run(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError
