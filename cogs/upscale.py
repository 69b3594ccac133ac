"""Apps ▸ "Upscale image": upscales the image attachments of any message in the channel
(anyone's) with UPSCALE_MODEL, as one job of the /generate cog charged to whoever asks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs._common import Refused
from cogs._images import is_image, read_attachment
from services.generation import MAX_PROMPT, ResolvedModel
from services.generation.requests import ImageSource, JobRequest

if TYPE_CHECKING:
    from bot import ImageBot

#: Images upscaled at most by one use of the menu (the first ones of the message).
MAX_IMAGES = 4
MENU_NAME = "Upscale image"


def prompt_of(message: discord.Message, bot_user: discord.abc.User | None) -> str:
    """What the upscale's record says it shows: a result's prompt, else the text."""
    if bot_user is not None and message.author.id == bot_user.id and message.embeds:
        description = message.embeds[0].description
        if description:
            return description[:MAX_PROMPT]
    return message.content.strip()[:MAX_PROMPT]


class UpscaleMenu(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name=MENU_NAME, callback=self.upscale)
        self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def upscale(self, interaction: discord.Interaction, message: discord.Message) -> None:
        if not interaction.app_permissions.attach_files:
            raise Refused("I need the Attach Files permission in this channel.")
        images = [a for a in message.attachments if is_image(a)]
        if not images:
            raise Refused("That message has no image to upscale.")
        images = images[:MAX_IMAGES]
        cog = self.bot.generate_cog
        settings = self.bot.settings
        prompt = prompt_of(message, self.bot.user)

        async def prepare() -> JobRequest:
            reader = cog.service.sources
            checked = tuple([await read_attachment(reader, a) for a in images])
            sources = tuple(
                ImageSource(
                    url=a.url,
                    channel_id=message.channel.id,
                    message_id=message.id,
                    attachment_id=a.id,
                    filename=a.filename,
                )
                for a in images
            )
            return JobRequest(
                prompt=prompt,
                model=ResolvedModel(settings.upscale_model),
                kind="upscale",
                sources=sources,
                images=checked,
            )

        await cog.start(interaction, prepare)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(UpscaleMenu(bot))
