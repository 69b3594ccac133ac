"""/generate: Discord in and out (the command, progress messages, results, jobs taken
over); the work is in :mod:`services.generation`, the buttons in ``cogs/_results.py`` and
``cogs/_actions.py``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs._actions import RemixButton, UpscaleButton, VaryButton, model_for
from cogs._channel_posts import finish_adopted, post_to_channel
from cogs._common import Refused, user_key
from cogs._images import fresh_link, read_attachment
from cogs._messages import edit_response, neutral, respond
from cogs._progress import ProgressMessage, progress_text
from cogs._results import (
    BUTTONS,
    REQUEST_LIMIT,
    progress_view,
    result_embed,
    result_files,
    result_view,
)
from services.errors import UserFacingError
from services.generation import (
    HANDED_BACK,
    INTERRUPTED,
    MAX_SEED,
    GenerationService,
    JobState,
    Outcome,
)
from services.generation.actions import request_of
from services.generation.requests import ImageSource, JobRequest
from services.input_images import InputImage
from services.replicate import ReplicateServiceError
from services.settings import ASPECT_RATIOS
from services.store import Generation
from services.tasks import spawn

if TYPE_CHECKING:
    from bot import ImageBot

log = logging.getLogger(__name__)

TICK_INTERVAL = 3.0
"""How often the elapsed time of a running job is refreshed."""
ANSWER_WITHIN = 2.0
"""Seconds a job may take to be checked and admitted before the answer is deferred
(Discord wants one within 3)."""
Prepare = Callable[[], Awaitable[JobRequest]]
"""Builds a job request: resolves the model, reads and checks input images."""


class Generate(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @property
    def service(self) -> GenerationService:
        return self.bot.services.generations

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*BUTTONS, UpscaleButton, VaryButton, RemixButton)
        services = self.bot.services
        services.adoption.on_discord_job = partial(finish_adopted, self.bot, self.service)
        self.service.sources.fresh_link = partial(fresh_link, self.bot)
        settings = self.bot.settings
        models = [*settings.generate_models, settings.upscale_model, settings.vary_model]
        self._warming = spawn(self.service.planner.warm(models), name="read-model-inputs")

    async def cog_unload(self) -> None:
        self.bot.services.adoption.on_discord_job = None
        self.service.sources.fresh_link = None
        self._warming.cancel()

    @app_commands.command(name="generate", description="Generate images from a prompt")
    @app_commands.describe(
        prompt="What to draw",
        model="Model to use (owner/name or owner/name:version)",
        aspect_ratio="Shape of the images (default: the model's)",
        count="How many images (1-4)",
        seed="Seed for reproducible results",
        image="A picture to start from (models that take an input image)",
        strength="With an image: how much the prompt changes it (0-1; 1 ignores the image)",
        lora_scale="Trained models: how strongly the training applies (default: the model's)",
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
        aspect_ratio: str | None = None,
        count: app_commands.Range[int, 1, 4] = 1,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.0, 1.0] | None = None,
        lora_scale: app_commands.Range[float, -10.0, 10.0] | None = None,
    ) -> None:
        await self.begin(
            interaction,
            prompt=prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            count=count,
            seed=seed,
            image=image,
            strength=strength,
            lora_scale=lora_scale,
        )

    async def begin(
        self,
        interaction: discord.Interaction,
        *,
        prompt: str,
        model: str | None = None,
        aspect_ratio: str | None = None,
        count: int = 1,
        seed: int | None = None,
        image: discord.Attachment | None = None,
        strength: float | None = None,
        lora_scale: float | None = None,
    ) -> None:
        """Start a generation from a command or a modal, and see it through."""
        guild_id = interaction.guild_id

        async def prepare() -> JobRequest:
            resolved = await self.service.models.resolve(model, guild_id)
            sources: tuple[ImageSource, ...] = ()
            images: tuple[InputImage, ...] = ()
            if image is not None:
                # Which models take an image is said before the image is read.
                await self.service.planner.require_image(resolved.ref, guild_id)
                images = (await read_attachment(self.service.sources, image),)
                sources = (
                    ImageSource(url=image.url, attachment_id=image.id, filename=image.filename),
                )
            return JobRequest(
                prompt=prompt,
                model=resolved,
                aspect_ratio=aspect_ratio,
                count=count,
                seed=seed,
                strength=strength,
                lora_scale=lora_scale,
                sources=sources,
                images=images,
            )

        await self.start(interaction, prepare)

    async def start(self, interaction: discord.Interaction, prepare: Prepare) -> None:
        """Admit the job ``prepare`` builds and see it through (from a command, a button,
        a modal or a menu).

        The job is checked and admitted (every limit checked and used up, in one step in
        the store) before the answer, so that a refusal is a private reply and uses
        nothing up. When that takes long (a model read for the first time, a big image)
        the answer is deferred first, and a refusal then takes the place of the reply."""

        async def admit() -> Generation:
            request = await prepare()
            return await self.service.create(
                request,
                user_key=user_key(interaction.user),
                user_id=interaction.user.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                interaction_id=interaction.id,
            )

        task = asyncio.ensure_future(admit())
        done, _ = await asyncio.wait({task}, timeout=ANSWER_WITHIN)
        if not done:
            await interaction.response.defer(thinking=True)
        try:
            generation = await task
        except UserFacingError as exc:
            if done:
                raise Refused(exc.user_message) from None
            await self._fail(interaction, exc.user_message)
            return
        # The job starts while the answer is on its way: under a burst of commands the
        # round trip to Discord would otherwise delay every prediction by as much.
        answered = asyncio.ensure_future(_defer(interaction)) if done else None
        await self.deliver(interaction, generation, answered)

    @generate.autocomplete("model")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        choices = await self.service.models.choices(interaction.guild_id, current)
        out = []
        for label, value in choices:
            note = self.service.planner.label(value)
            if note:
                label = f"{label} ({note})" if not label.endswith(")") else f"{label[:-1]}, {note})"
            out.append(app_commands.Choice(name=label[:100], value=value[:100]))
        return out

    async def reroll(self, interaction: discord.Interaction, gen_id: str) -> None:
        again = await self.service.reroll_of(gen_id)
        if again is None:
            await respond(interaction, "This job no longer exists.", ephemeral=True)
            return

        async def prepare() -> JobRequest:
            return request_of(again, await model_for(self, again, interaction.guild_id))

        await self.start(interaction, prepare)

    async def deliver(
        self,
        interaction: discord.Interaction,
        generation: Generation,
        answered: asyncio.Future[None] | None = None,
    ) -> None:
        """Run the job with a live progress message, then post the images. ``answered``:
        the answer still on its way, which every message of the job waits for."""
        started = time.monotonic()
        progress = ProgressMessage(interaction, progress_view(generation.id), answered)
        state_holder: dict[str, JobState] = {}

        shown_step: tuple[str, int, int] | None = None
        # A job that starts at once shows "Generating" (and its Cancel button) only after
        # this long: a fast one is done by then, even on a busy bot, which spends nothing
        # on edits nobody would see (meanwhile Discord shows that the bot is thinking).
        first_edit = self.bot.settings.progress_after_seconds

        async def listener(state: JobState) -> None:
            # Replicate's status changes (starting, processing) do not change what the
            # user sees; the ticker below keeps the elapsed time current.
            nonlocal shown_step
            state_holder["state"] = state
            step = (state.phase, state.position, state.queue_size)
            if state.finishing:
                progress.drop_pending()  # the images follow: an edit now would delay them
                return
            if step != shown_step:
                started_at_once = shown_step is None and state.phase == "generating"
                shown_step = step
                await progress.show(
                    partial(progress_text, state), delay=first_edit if started_at_once else 0.0
                )

        async def ticker() -> None:
            while True:
                await asyncio.sleep(TICK_INTERVAL)
                state = state_holder.get("state")
                if (
                    state is not None
                    and state.phase == "generating"
                    and not state.finishing
                    and state.elapsed >= first_edit
                ):
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
        view = result_view(outcome.generation, len(outcome.images))

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
            message = await post_to_channel(
                self.bot,
                interaction.channel_id,
                outcome.generation.user_id,
                f"{interaction.user.mention}, your images are ready.",
                embed=embed,
                files=files(),
                view=view,
            )
        if message is not None:
            await self.service.record_result_message(outcome.generation.id, message.id)

    async def _fail(self, interaction: discord.Interaction, text: str, icon: str = "❌") -> None:
        content = f"{icon} {neutral(text)}"[:2000]
        try:
            await edit_response(interaction, content=content, embed=None, view=None)
        except discord.HTTPException as exc:
            log.info("could not show an error for %s: %s", interaction.id, exc)


async def _defer(interaction: discord.Interaction) -> None:
    try:
        await interaction.response.defer(thinking=True)
    except discord.HTTPException as exc:
        log.info("could not answer %s: %s", interaction.id, exc)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Generate(bot))
