"""Posts in a channel rather than in an interaction's response: results that outlived
the interaction token (a long queue, a restart) and jobs taken over from a process that
is gone (not an extension: no setup())."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord

from cogs._messages import neutral, send
from cogs._results import (
    DEFAULT_UPLOAD_LIMIT,
    REQUEST_LIMIT,
    reroll_view,
    result_embed,
    result_files,
    result_view,
)
from services.generation import GenerationService, Outcome, no_progress
from services.log_context import current_shard
from services.replicate import ReplicateServiceError
from services.store import Generation

if TYPE_CHECKING:
    from bot import ImageBot

log = logging.getLogger(__name__)


async def post_to_channel(
    bot: ImageBot,
    channel_id: int | None,
    user_id: int | None,
    content: str,
    **kwargs: Any,
) -> discord.Message | None:
    """Post as an ordinary channel message, pinging only the requester: for results
    that outlived the interaction token (a long queue, a restart)."""
    if channel_id is None:
        return None
    try:
        # By id, over REST: the channel may be in a guild of another process's shard.
        channel = bot.get_partial_messageable(channel_id)
        return await send(channel, content[:2000], requester=user_id, **kwargs)
    except discord.HTTPException as exc:
        log.warning("could not post in channel %s: %s", channel_id, exc)
        return None


async def finish_adopted(bot: ImageBot, service: GenerationService, generation: Generation) -> None:
    """Finish a job this process took over from one that is gone (or from its own
    previous run): the interaction is not ours any more, so the result, or why there
    is none, is posted in the channel."""
    current_shard.set(bot.shard_of(generation.guild_id))
    await bot.wait_until_ready()
    limits = {"size_limit": DEFAULT_UPLOAD_LIMIT, "total_limit": REQUEST_LIMIT - 512 * 1024}
    try:
        if generation.status == "queued":
            outcome = await service.run(generation, no_progress, **limits)
        else:
            outcome = await bot.services.adoption.follow(generation, **limits)
    except ReplicateServiceError:
        outcome = Outcome(await service.get(generation.id) or generation, None)
    ended_elsewhere = outcome.result is None and outcome.generation.status in (
        "succeeded",
        "running",
        "queued",
    )
    if outcome.handed_back or ended_elsewhere:
        return  # handed back again, or finished by whoever posts it
    mention = f"<@{generation.user_id}>" if generation.user_id else ""
    if outcome.result is not None:
        message = await post_to_channel(
            bot,
            generation.channel_id,
            generation.user_id,
            f"{mention} your images are ready (the bot restarted while they were made).",
            embed=result_embed(outcome, None),
            files=result_files(outcome),
            view=result_view(outcome.generation, len(outcome.images)),
        )
        if message is not None:
            await service.record_result_message(generation.id, message.id)
        return
    stopped = outcome.generation
    prompt = neutral(discord.utils.escape_markdown(stopped.prompt[:200]))
    error = neutral(stopped.error or "")
    view = reroll_view(generation.id)
    await post_to_channel(
        bot,
        generation.channel_id,
        generation.user_id,
        f"{mention} your images for “{prompt}” could not be made: {error} "
        "Press Reroll to try again.",
        view=view,
    )
