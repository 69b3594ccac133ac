"""/generate and its buttons: Discord in and out; the work is in services/generation.py."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs._buttons import CancelJobButton, OwnedJob, may_act
from cogs._common import DynamicButton, IdButton, Refused, bot_of, user_key
from cogs._messages import edit_response, neutral, respond, send
from services.errors import UserFacingError
from services.generation import (
    HANDED_BACK,
    INTERRUPTED,
    MAX_SEED,
    GenerationService,
    JobState,
    Outcome,
    no_progress,
)
from services.log_context import current_shard
from services.replicate import ReplicateServiceError
from services.settings import ASPECT_RATIOS
from services.store import Generation
from services.tasks import spawn

if TYPE_CHECKING:
    from bot import ImageBot

log = logging.getLogger(__name__)

EDIT_INTERVAL = 1.5
"""Least seconds between two edits of a progress message."""
TICK_INTERVAL = 3.0
"""How often the elapsed time of a running job is refreshed."""
FIRST_EDIT_DELAY = 1.0
"""A job that starts at once shows "Generating" (and its Cancel button) after this long:
the fastest models are done by then, and a busy bot spends nothing on edits nobody sees."""
REQUEST_LIMIT = 25 * 1024 * 1024
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
"""Discord's per-file limit when no interaction says otherwise."""
EMBED_PROMPT = 1000


def service_of(interaction: discord.Interaction) -> GenerationService:
    return bot_of(interaction).services.generations


def progress_text(state: JobState) -> str:
    if state.phase == "queued":
        return f"⏳ Queued: position {state.position} of {state.queue_size}."
    return f"🎨 Generating… {state.elapsed:.0f} s"


class ProgressMessage:
    """Edits the interaction's original response, at most every EDIT_INTERVAL seconds.

    The newest state always wins: an edit asked for too early is sent once the interval
    has passed, and ``close`` drops anything still pending."""

    def __init__(self, interaction: discord.Interaction, view: discord.ui.View) -> None:
        self.interaction = interaction
        self.view = view
        self._last = 0.0
        self._pending: Callable[[], str] | None = None
        self._shown: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    async def show(self, text: Callable[[], str], *, delay: float = 0.0) -> None:
        """Show what ``text()`` says when the edit is sent: as soon as the edit interval
        allows, and not before ``delay``."""
        if self.closed or text() == self._shown:
            return
        self._pending = text
        if self._task is None or self._task.done():
            wait = max(self._last + EDIT_INTERVAL - time.monotonic(), delay)
            self._task = spawn(self._flush_later(wait), name=f"progress-{self.interaction.id}")

    async def _flush_later(self, wait: float) -> None:
        """Edits run in their own task so that the job never waits for Discord."""
        while True:
            if wait > 0:
                await asyncio.sleep(wait)
            # Once started, an edit completes even if close() comes meanwhile (close waits).
            await asyncio.shield(self._flush())
            if self.closed or self._pending is None:
                return
            wait = self._last + EDIT_INTERVAL - time.monotonic()

    async def _flush(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, None
            if self.closed or pending is None:
                return
            text = pending()
            if text == self._shown:
                return
            self._last = time.monotonic()
            self._shown = text
            try:
                await edit_response(self.interaction, content=text, view=self.view)
            except discord.HTTPException as exc:
                log.info("progress edit failed for %s: %s", self.interaction.id, exc)

    async def close(self) -> None:
        """Drop pending edits and wait for one in flight, so none lands after the result."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        async with self._lock:
            pass


class GenButton(IdButton):
    prefix = "gen"


class CancelButton(
    GenButton, CancelJobButton, DynamicButton, template=r"gen:cancel:(?P<id>[\w-]+)"
):
    label = "Cancel"
    refusal_text = "Only the person who asked for these images can cancel them."

    async def find(self, interaction: discord.Interaction) -> OwnedJob | None:
        return await service_of(interaction).get(self.job_id)

    async def cancel(self, interaction: discord.Interaction) -> str:
        if await service_of(interaction).cancel(self.job_id):
            return "Canceled."
        return "This job has already finished."


class RerollButton(GenButton, DynamicButton, template=r"gen:reroll:(?P<id>[\w-]+)"):
    action, label, style, emoji = "reroll", "Reroll", discord.ButtonStyle.primary, "🎲"

    async def run(self, interaction: discord.Interaction) -> None:
        await bot_of(interaction).generate_cog.reroll(interaction, self.job_id)


class DetailsButton(GenButton, DynamicButton, template=r"gen:details:(?P<id>[\w-]+)"):
    action, label = "details", "Details"

    async def run(self, interaction: discord.Interaction) -> None:
        generation = await service_of(interaction).get(self.job_id)
        if generation is None:
            await respond(interaction, "This job no longer exists.", ephemeral=True)
            return
        await respond(interaction, details_text(generation), ephemeral=True)


class DeleteButton(GenButton, DynamicButton, template=r"gen:delete:(?P<id>[\w-]+)"):
    action, label, style, emoji = "delete", "Delete", discord.ButtonStyle.danger, "🗑️"

    async def run(self, interaction: discord.Interaction) -> None:
        generation = await service_of(interaction).get(self.job_id)
        owner_id = generation.user_id if generation is not None else None
        if not may_act(interaction, owner_id, "manage_messages"):
            await respond(
                interaction,
                "Only the person who asked for these images, or someone with Manage Messages, "
                "can delete them.",
                ephemeral=True,
            )
            return
        await interaction.response.defer()
        if interaction.message is not None:
            await interaction.message.delete()


def details_text(generation: Generation) -> str:
    params = generation.params
    lines = [
        f"**Prompt:** {neutral(generation.prompt)}",
        f"**Model:** `{generation.model}`",
        f"**Aspect ratio:** {params.get('aspect_ratio')} · **Images:** {params.get('count')}",
        f"**Seed:** {generation.seed if generation.seed is not None else params.get('seed')}",
        f"**Status:** {generation.status}",
    ]
    if params.get("trigger_prepended"):
        lines.append(f"**Trigger word added:** {neutral(str(params.get('trigger_word')))}")
    if generation.predict_time is not None:
        lines.append(f"**Replicate predict time:** {generation.predict_time:.1f} s")
    if generation.prediction_id:
        lines.append(f"**Prediction:** `{generation.prediction_id}`")
    lines.append(f"**Job:** `{generation.id}`")
    return "\n".join(lines)[:2000]


def result_embed(outcome: Outcome, took: float | None) -> discord.Embed:
    generation = outcome.generation
    prompt = neutral(generation.prompt)
    if len(prompt) > EMBED_PROMPT:
        prompt = prompt[: EMBED_PROMPT - 1] + "…"
    embed = discord.Embed(description=prompt, colour=discord.Colour.blurple())
    embed.add_field(name="Model", value=f"`{generation.model[:200]}`", inline=False)
    embed.add_field(name="Seed", value=str(generation.seed))
    embed.add_field(name="Aspect ratio", value=str(generation.params.get("aspect_ratio")))
    if took is not None:
        embed.add_field(name="Time", value=f"{took:.1f} s")
    if generation.user_id is not None:
        embed.add_field(name="Requested by", value=f"<@{generation.user_id}>")
    if generation.params.get("trigger_prepended"):
        embed.add_field(
            name="Trigger word", value=f"`{generation.params.get('trigger_word')}` was added"
        )
    if any(image.reencoded for image in outcome.images):
        embed.set_footer(text="Some images were re-encoded to fit Discord's upload limit.")
    return embed


def result_files(outcome: Outcome) -> list[discord.File]:
    return [
        discord.File(io.BytesIO(image.data), filename=f"{index}-{image.filename}")
        for index, image in enumerate(outcome.images)
    ]


def result_view(gen_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(gen_id))
    view.add_item(DetailsButton(gen_id))
    view.add_item(DeleteButton(gen_id))
    return view


def progress_view(gen_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(gen_id))
    return view


class Generate(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @property
    def service(self) -> GenerationService:
        return self.bot.services.generations

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(CancelButton, RerollButton, DetailsButton, DeleteButton)
        self.bot.services.adoption.on_discord_job = self.finish_adopted

    async def cog_unload(self) -> None:
        self.bot.services.adoption.on_discord_job = None

    @app_commands.command(name="generate", description="Generate images from a prompt")
    @app_commands.describe(
        prompt="What to draw",
        model="Model to use (owner/name or owner/name:version)",
        aspect_ratio="Shape of the images",
        count="How many images (1-4)",
        seed="Seed for reproducible results",
    )
    @app_commands.choices(
        aspect_ratio=[app_commands.Choice(name=r, value=r) for r in ASPECT_RATIOS]
    )
    @app_commands.checks.bot_has_permissions(attach_files=True)
    async def generate(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1000],
        model: str | None = None,
        aspect_ratio: str = "1:1",
        count: app_commands.Range[int, 1, 4] = 1,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
    ) -> None:
        await self.begin(
            interaction,
            prompt=prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            count=count,
            seed=seed,
        )

    async def begin(
        self,
        interaction: discord.Interaction,
        *,
        prompt: str,
        model: str | None = None,
        aspect_ratio: str = "1:1",
        count: int = 1,
        seed: int | None = None,
    ) -> None:
        """Start a generation from a command, a button or a modal, and see it through.

        The job is admitted (every limit checked and used up, in one step in the store)
        before the answer, so that a refusal is a private reply and uses nothing up."""
        try:
            resolved = await self.service.models.resolve(model, interaction.guild_id)
            generation = await self.service.create(
                user_key=user_key(interaction.user),
                prompt=prompt,
                model=resolved,
                aspect_ratio=aspect_ratio,
                count=count,
                seed=seed,
                user_id=interaction.user.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                interaction_id=interaction.id,
            )
        except UserFacingError as exc:
            raise Refused(exc.user_message) from None
        await interaction.response.defer(thinking=True)
        await self.deliver(interaction, generation)

    @generate.autocomplete("model")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        choices = await self.service.models.choices(interaction.guild_id, current)
        return [app_commands.Choice(name=label, value=value[:100]) for label, value in choices]

    async def reroll(self, interaction: discord.Interaction, gen_id: str) -> None:
        again = await self.service.reroll_of(gen_id)
        if again is None:
            await respond(interaction, "This job no longer exists.", ephemeral=True)
            return
        await self.begin(
            interaction,
            prompt=again.prompt,
            model=again.model,
            aspect_ratio=again.aspect_ratio,
            count=again.count,
        )

    async def deliver(self, interaction: discord.Interaction, generation: Generation) -> None:
        """Run the job with a live progress message, then post the images."""
        started = time.monotonic()
        progress = ProgressMessage(interaction, progress_view(generation.id))
        state_holder: dict[str, JobState] = {}

        shown_step: tuple[str, int, int] | None = None

        async def listener(state: JobState) -> None:
            # Replicate's status changes (starting, processing) do not change what the
            # user sees; the ticker below keeps the elapsed time current.
            nonlocal shown_step
            state_holder["state"] = state
            step = (state.phase, state.position, state.queue_size)
            if step != shown_step:
                started_at_once = shown_step is None and state.phase == "generating"
                shown_step = step
                await progress.show(
                    partial(progress_text, state),
                    delay=FIRST_EDIT_DELAY if started_at_once else 0.0,
                )

        async def ticker() -> None:
            while True:
                await asyncio.sleep(TICK_INTERVAL)
                state = state_holder.get("state")
                if state is not None and state.phase == "generating":
                    await progress.show(partial(progress_text, state))

        tick = spawn(ticker(), name=f"progress-ticker-{generation.id}")
        try:
            outcome = await self.service.run(
                generation,
                listener,
                size_limit=interaction.filesize_limit,
                total_limit=REQUEST_LIMIT - 512 * 1024,
            )
        except ReplicateServiceError as exc:
            await progress.close()
            await self._fail(interaction, exc.user_message)
            return
        except asyncio.CancelledError:
            await progress.close()
            await self._fail(interaction, INTERRUPTED)
            raise
        except Exception:
            await progress.close()
            log.exception("generation %s failed", generation.id)
            await self._fail(interaction, "Sorry, something went wrong while generating.")
            return
        finally:
            tick.cancel()
        await progress.close()
        if outcome.handed_back:
            await self._fail(interaction, HANDED_BACK, icon="⏸️")
            return
        if outcome.result is None:
            stopped = outcome.generation
            icon = "🛑" if stopped.status == "canceled" else "❌"
            await self._fail(interaction, stopped.error or "Canceled.", icon=icon)
            return
        await self._post(interaction, outcome, time.monotonic() - started)

    async def _post(self, interaction: discord.Interaction, outcome: Outcome, took: float) -> None:
        embed = result_embed(outcome, took)
        view = result_view(outcome.generation.id)

        def files() -> list[discord.File]:
            return result_files(outcome)

        message: discord.Message | None = None
        if not interaction.is_expired():
            try:
                message = await edit_response(
                    interaction, content=None, embed=embed, attachments=files(), view=view
                )
            except discord.Forbidden:
                await self._fail(interaction, "I don't have permission to attach files here.")
                return
            except discord.HTTPException as exc:
                log.info("could not edit the response of %s: %s", interaction.id, exc)
        if message is None:
            message = await self._post_to_channel(
                interaction.channel_id,
                outcome.generation.user_id,
                f"{interaction.user.mention}, your images are ready.",
                embed=embed,
                files=files(),
                view=view,
            )
        if message is not None:
            await self.service.record_result_message(outcome.generation.id, message.id)

    async def _post_to_channel(
        self,
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
            channel = self.bot.get_partial_messageable(channel_id)
            return await send(channel, content[:2000], requester=user_id, **kwargs)
        except discord.HTTPException as exc:
            log.warning("could not post in channel %s: %s", channel_id, exc)
            return None

    async def finish_adopted(self, generation: Generation) -> None:
        """Finish a job this process took over from one that is gone (or from its own
        previous run): the interaction is not ours any more, so the result, or why there
        is none, is posted in the channel."""
        current_shard.set(self.bot.shard_of(generation.guild_id))
        await self.bot.wait_until_ready()
        limits = {"size_limit": DEFAULT_UPLOAD_LIMIT, "total_limit": REQUEST_LIMIT - 512 * 1024}
        try:
            if generation.status == "queued":
                outcome = await self.service.run(generation, no_progress, **limits)
            else:
                outcome = await self.bot.services.adoption.follow(generation, **limits)
        except ReplicateServiceError:
            outcome = Outcome(await self.service.get(generation.id) or generation, None)
        ended_elsewhere = outcome.result is None and outcome.generation.status in (
            "succeeded",
            "running",
            "queued",
        )
        if outcome.handed_back or ended_elsewhere:
            return  # handed back again, or finished by whoever posts it
        mention = f"<@{generation.user_id}>" if generation.user_id else ""
        if outcome.result is not None:
            message = await self._post_to_channel(
                generation.channel_id,
                generation.user_id,
                f"{mention} your images are ready (the bot restarted while they were made).",
                embed=result_embed(outcome, None),
                files=result_files(outcome),
                view=result_view(generation.id),
            )
            if message is not None:
                await self.service.record_result_message(generation.id, message.id)
            return
        stopped = outcome.generation
        prompt = neutral(discord.utils.escape_markdown(stopped.prompt[:200]))
        error = neutral(stopped.error or "")
        view = discord.ui.View(timeout=None)
        view.add_item(RerollButton(generation.id))
        await self._post_to_channel(
            generation.channel_id,
            generation.user_id,
            f"{mention} your images for “{prompt}” could not be made: {error} "
            "Press Reroll to try again.",
            view=view,
        )

    async def _fail(self, interaction: discord.Interaction, text: str, icon: str = "❌") -> None:
        content = f"{icon} {neutral(text)}"[:2000]
        try:
            await edit_response(interaction, content=content, embed=None, view=None)
        except discord.HTTPException as exc:
            log.info("could not show an error for %s: %s", interaction.id, exc)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Generate(bot))
