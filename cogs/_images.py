"""Images users give the bot in Discord: attachments read and checked before a job is
admitted, and fresh links to images already posted (Discord's attachment links expire)."""

from __future__ import annotations

import logging

import discord
from discord.ext import commands

from services.errors import UserFacingError
from services.generation.sources import ImageSources
from services.input_images import InputImage, InputImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def is_image(attachment: discord.Attachment) -> bool:
    """An attachment that looks like a picture (its type, else its name); the bytes are
    checked once read."""
    content_type = (attachment.content_type or "").split(";")[0].strip()
    if content_type:
        return content_type.startswith("image/")
    return attachment.filename.lower().endswith(IMAGE_EXTENSIONS)


async def read_attachment(sources: ImageSources, attachment: discord.Attachment) -> InputImage:
    """Download and check an image attachment (its size first, from Discord's word)."""
    if attachment.size > sources.max_bytes:
        raise InputImageError(
            "too_large",
            f"The image is too large ({attachment.size / 2**20:.1f} MB > "
            f"{sources.max_bytes >> 20} MB).",
        )
    try:
        data = await attachment.read()
    except discord.HTTPException as exc:
        raise UserFacingError("I could not download that attachment; try again.") from exc
    return await sources.check(data)


async def fresh_link(
    bot: commands.Bot, channel_id: int, message_id: int, attachment_id: int | None, index: int
) -> str | None:
    """A fresh link to an image of a message: the attachment ``attachment_id``, else the
    ``index``-th image (a result's images are in order); None if it is gone."""
    try:
        # By id, over REST: the channel may be in a guild of another process's shard.
        message = await bot.get_partial_messageable(channel_id).fetch_message(message_id)
    except discord.HTTPException as exc:
        log.info("could not read message %s for an input image: %s", message_id, exc)
        return None
    images = [a for a in message.attachments if is_image(a)]
    if attachment_id is not None:
        found = next((a for a in images if a.id == attachment_id), None)
        return found.url if found is not None else None
    return images[index].url if 0 <= index < len(images) else None
