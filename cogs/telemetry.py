"""What the Discord front end counts for the metrics: every interaction it receives, by
command, and every 429 discord.py had to wait out (it says so in its log)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from services import metrics

if TYPE_CHECKING:
    from bot import ImageBot

#: discord.py's loggers that report each 429 they wait out: the bot's REST calls, and
#: the interaction webhooks (answers, follow-ups). They say so at WARNING, so 429s are
#: counted with LOG_LEVEL at WARNING or below (the default is INFO).
RATE_LIMIT_LOGGERS = ("discord.http", "discord.webhook.async_")


def interaction_label(interaction: discord.Interaction) -> str | None:
    """A bounded label: the command (with its subcommand), or a component's kind."""
    data: dict[str, Any] = dict(interaction.data or {})
    kind = interaction.type
    if kind in (
        discord.InteractionType.application_command,
        discord.InteractionType.autocomplete,
    ):
        parts = [str(data.get("name", "?"))]
        options = data.get("options") or []
        while options and options[0].get("type") in (1, 2):
            parts.append(str(options[0].get("name")))
            options = options[0].get("options") or []
        label = "/" + " ".join(parts)
        return (
            label
            if kind is discord.InteractionType.application_command
            else f"{label} (autocomplete)"
        )
    if kind in (discord.InteractionType.component, discord.InteractionType.modal_submit):
        custom_id = str(data.get("custom_id", ""))
        prefix = ":".join(custom_id.split(":")[:2]) or "?"
        return f"{'button' if kind is discord.InteractionType.component else 'modal'} {prefix}"
    return None


class RateLimitCounter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            return
        message = str(record.msg)
        if message.startswith("We are being rate limited"):
            metrics.discord_rate_limited("route")
        elif message.startswith("Global rate limit"):
            metrics.discord_rate_limited("global")
        elif message.startswith("Webhook ID") and "rate limited" in message:
            metrics.discord_rate_limited("interaction")


class Telemetry(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        self.rate_limits = RateLimitCounter()

    async def cog_load(self) -> None:
        for name in RATE_LIMIT_LOGGERS:
            logging.getLogger(name).addHandler(self.rate_limits)

    async def cog_unload(self) -> None:
        for name in RATE_LIMIT_LOGGERS:
            logging.getLogger(name).removeHandler(self.rate_limits)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        label = interaction_label(interaction)
        if label is not None:
            metrics.interaction(label)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Telemetry(bot))
