"""The one way the bot sends or edits a message (not an extension: no setup()).

Every message goes out with ``allowed_mentions`` that let through at most its
requester's ping: never @everyone or @here, a role, another user, or the author of a
replied-to message, whatever the text holds and whatever the bot's defaults are. User
text (prompts, model and file names, error messages that quote them) is passed through
:func:`neutral`, so that a mention in it is shown as typed and is not even highlighted.
``tests/test_mentions.py`` checks both on the wire for every message with user text,
and that nothing in ``cogs/`` sends a message any other way.
"""

from __future__ import annotations

from typing import Any

import discord


def neutral(text: str) -> str:
    """User text with its mentions (@everyone, @here, users, roles) made inert."""
    return discord.utils.escape_mentions(text)


def only_requester(requester: int | None = None) -> discord.AllowedMentions:
    """Whom a message may ping: its requester, if given, and nobody else."""
    return discord.AllowedMentions(
        everyone=False,
        roles=False,
        users=[discord.Object(requester)] if requester else False,
        replied_user=False,
    )


async def respond(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    requester: int | None = None,
    **kwargs: Any,
) -> None:
    """Answer an interaction, or follow it up when it was already answered."""
    mentions = only_requester(requester)
    if interaction.response.is_done():
        await interaction.followup.send(content, allowed_mentions=mentions, **kwargs)
    else:
        await interaction.response.send_message(content, allowed_mentions=mentions, **kwargs)


async def edit_response(
    interaction: discord.Interaction, *, requester: int | None = None, **kwargs: Any
) -> discord.InteractionMessage:
    """Edit the interaction's original response."""
    return await interaction.edit_original_response(
        allowed_mentions=only_requester(requester), **kwargs
    )


async def send(
    channel: discord.abc.Messageable,
    content: str | None = None,
    *,
    requester: int | None = None,
    **kwargs: Any,
) -> discord.Message:
    """Post an ordinary channel message (one that outlives any interaction)."""
    return await channel.send(content, allowed_mentions=only_requester(requester), **kwargs)


async def edit(
    message: discord.Message | discord.PartialMessage,
    *,
    requester: int | None = None,
    **kwargs: Any,
) -> discord.Message:
    """Edit a message the bot posted."""
    return await message.edit(allowed_mentions=only_requester(requester), **kwargs)
