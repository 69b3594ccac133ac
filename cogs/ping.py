"""/ping: is the bot alive, and does Replicate answer?"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from services.replicate import ReplicateServiceError

if TYPE_CHECKING:
    from bot import ImageBot

log = logging.getLogger(__name__)

REPLICATE_PING_TIMEOUT = 1.5
"""Short enough that the reply still lands inside Discord's 3 s window."""


class Ping(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @app_commands.command(name="ping", description="Check that the bot and Replicate answer")
    async def ping(self, interaction: discord.Interaction) -> None:
        shard_id = self.bot.shard_of(interaction.guild_id)
        shard = self.bot.get_shard(shard_id)
        latency = shard.latency if shard is not None else self.bot.latency
        gateway = (
            "unknown" if math.isnan(latency) or math.isinf(latency) else f"{latency * 1000:.0f} ms"
        )
        shards = self.bot.shard_count or 1
        try:
            rtt = await self.bot.services.replicate.ping(timeout=REPLICATE_PING_TIMEOUT)
            replicate = f"{rtt:.0f} ms"
        except ReplicateServiceError as exc:
            log.info("replicate ping failed: %s", exc.user_message)
            replicate = "unreachable"
        await interaction.response.send_message(
            f"Pong! Gateway: {gateway} (shard {shard_id} of {shards}) · Replicate: {replicate}"
        )


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Ping(bot))
