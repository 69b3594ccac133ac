"""The sample image posted right under a training's completion notice: one image of the
new model with its trigger word (``TRAIN_SAMPLE_PROMPT``), made as an ordinary job of
the requester's (it counts as one of their generations; the cooldown does not refuse it).

The notice goes out first and never waits for the sample; a sample that cannot be made
(quota used up, bot busy, the model failing) is only logged, so the notice stays the one
message about the training."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from cogs._messages import send
from cogs._results import result_embed, result_files, result_view
from services.errors import UserFacingError
from services.generation import MAX_PROMPT, ResolvedModel, no_progress
from services.generation.requests import JobRequest
from services.store import Training

if TYPE_CHECKING:
    from bot import ImageBot

log = logging.getLogger(__name__)

UPLOAD_LIMIT = 10 * 1024 * 1024
TOTAL_LIMIT = 24 * 1024 * 1024


def sample_job_id(training: Training) -> str:
    """The sample's job id: one sample per training, even if the notice is sent again."""
    return f"s{training.id}"


def sample_prompt(template: str, trigger_word: str) -> str:
    return template.replace("{trigger}", trigger_word).strip()[:MAX_PROMPT]


async def post_sample(bot: ImageBot, training: Training, notice: discord.Message) -> None:
    """Make the sample and post it as a reply to ``notice``."""
    prompt = sample_prompt(bot.settings.train_sample_prompt, training.trigger_word)
    if not prompt or training.status != "succeeded" or not training.version:
        return
    service = bot.services.generations
    job_id = sample_job_id(training)
    # One sample per training, even when the notice is sent again (after a restart, or by
    # two processes at once, which Discord deduplicates by its nonce).
    claimed, _ = await bot.services.store.swap_meta(f"train_sample:{training.id}", job_id)
    if not claimed:
        return
    request = JobRequest(
        prompt=prompt,
        model=ResolvedModel(training.version, trigger_word=training.trigger_word),
    )
    try:
        generation = await service.create(
            request,
            user_key=training.user_key,
            user_id=training.user_id,
            guild_id=training.guild_id,
            channel_id=training.channel_id,
            cooldown=False,
            job_id=job_id,
        )
        outcome = await service.run(
            generation, no_progress, size_limit=UPLOAD_LIMIT, total_limit=TOTAL_LIMIT
        )
    except UserFacingError as exc:
        log.info("no sample for training %s: %s", training.id, exc)
        return
    if outcome.result is None:
        log.info(
            "no sample for training %s: %s", training.id, outcome.generation.error or "no image"
        )
        return
    try:
        message = await send(
            notice.channel,
            f"A sample from **{training.model_ref}**:",
            reference=notice,
            embed=result_embed(outcome, None),
            files=result_files(outcome),
            view=result_view(outcome.generation, len(outcome.images)),
        )
    except discord.HTTPException as exc:
        log.warning("could not post the sample of training %s: %s", training.id, exc)
        return
    await service.record_result_message(generation.id, message.id)
