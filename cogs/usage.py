"""/usage: your own jobs, GPU time and estimated cost (and, with Manage Server, the
server's and its top users), with a chart of the last 30 days."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs._common import user_key
from cogs._messages import respond
from services.budgets import reset_text
from services.costs import usd
from services.store.usage import UserUsage
from services.usage import Totals, UsageReport, UsageService

if TYPE_CHECKING:
    from bot import ImageBot

COLOUR = discord.Colour.blurple()


def counted(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def totals_text(totals: Totals) -> str:
    images = f" ({counted(totals.images, 'image')})" if totals.images != totals.generations else ""
    return (
        f"{counted(totals.generations, 'generation')}{images} · "
        f"{counted(totals.trainings, 'training')}\n"
        f"{totals.gpu_seconds:,.1f} GPU s · ~{usd(totals.cost_usd)}"
    )


def report_embed(title: str, report: UsageReport) -> discord.Embed:
    embed = discord.Embed(title=title, colour=COLOUR)
    embed.add_field(name="Today", value=totals_text(report.today))
    embed.add_field(name="This month", value=totals_text(report.month))
    embed.add_field(name="Last 30 days", value=totals_text(report.last_30_days))
    if report.budget is not None:
        budget = report.budget
        embed.add_field(
            name="Monthly budget",
            value=f"~{usd(budget.spent)} of {usd(budget.limit)} used; "
            f"resets {reset_text(budget.resets_at)}",
            inline=False,
        )
    return embed


def top_users_text(users: list[UserUsage]) -> str:
    if not users:
        return "Nobody yet this month."
    return "\n".join(
        f"{rank}. <@{u.user_id}>: {counted(u.generations, 'generation')}, "
        f"{counted(u.trainings, 'training')}, {u.gpu_seconds:,.0f} GPU s, ~{usd(u.cost_usd)}"
        for rank, u in enumerate(users, 1)
    )[:1024]


class Usage(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @property
    def service(self) -> UsageService:
        return self.bot.services.usage

    @app_commands.command(name="usage", description="Your jobs, GPU time and estimated cost")
    async def usage(self, interaction: discord.Interaction) -> None:
        # Drawing a chart can take longer than the 3 s an answer may take.
        await interaction.response.defer(ephemeral=True, thinking=True)
        mine = await self.service.for_user(user_key(interaction.user))
        embeds = [report_embed("Your usage", mine)]
        files = [self._file(await self.service.chart(mine, "Your usage"), "usage-you.png")]
        embeds[0].set_image(url="attachment://usage-you.png")
        guild_id = interaction.guild_id
        if guild_id is not None and interaction.permissions.manage_guild:
            server = await self.service.for_guild(guild_id)
            embed = report_embed("This server's usage", server)
            embed.add_field(
                name="Top users this month",
                value=top_users_text(await self.service.top_users(guild_id)),
                inline=False,
            )
            chart = await self.service.chart(server, "This server's usage")
            files.append(self._file(chart, "usage-server.png"))
            embed.set_image(url="attachment://usage-server.png")
            embeds.append(embed)
        embeds[-1].set_footer(text="Costs are estimates from the bot's price table.")
        await respond(interaction, embeds=embeds, files=files, ephemeral=True)

    @staticmethod
    def _file(data: bytes, name: str) -> discord.File:
        return discord.File(io.BytesIO(data), filename=name)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Usage(bot))
