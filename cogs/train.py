"""/train, /trainings and the training buttons; the work is in services/training/.

Trainings outlive the 15-minute interaction token, so everything after the first reply
(status message, final notice) goes through ordinary channel messages.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs._buttons import CancelJobButton, OwnedJob
from cogs._common import (
    DynamicButton,
    IdButton,
    Refused,
    bot_of,
    note_shard,
    report_error,
    user_key,
)
from cogs._messages import edit, edit_response, neutral, respond, send
from cogs._samples import post_sample
from services.errors import UserFacingError
from services.replicate import ReplicateServiceError
from services.store import Training
from services.tasks import spawn
from services.training import TrainingService, check_names, eta_seconds, progress_bar
from services.zipcheck import ZipCheckError, download_to_file

if TYPE_CHECKING:
    from bot import ImageBot

log = logging.getLogger(__name__)

STATUS_COLOURS = {
    "starting": discord.Colour.light_grey(),
    "processing": discord.Colour.blurple(),
    "succeeded": discord.Colour.green(),
    "failed": discord.Colour.red(),
    "canceled": discord.Colour.dark_grey(),
}
STATUS_WORDS = {
    "starting": "⏳ Starting",
    "processing": "🏋️ Training",
    "succeeded": "✅ Done",
    "failed": "❌ Failed",
    "canceled": "🛑 Canceled",
}


def service_of(interaction: discord.Interaction) -> TrainingService:
    return bot_of(interaction).services.trainings


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def status_embed(training: Training, now: datetime | None = None) -> discord.Embed:
    now = now or datetime.now(UTC)
    embed = discord.Embed(
        title=f"Training {training.model_ref}"[:256],
        colour=STATUS_COLOURS.get(training.status, discord.Colour.default()),
    )
    lines = [f"**{STATUS_WORDS.get(training.status, training.status)}**"]
    total = training.total_steps or training.steps
    if training.status in ("starting", "processing"):
        step = training.step or 0
        percent = 100 * step / total if total else 0
        lines.append(f"`{progress_bar(step, total)}` {percent:.0f}% (step {step}/{total})")
        since = training.started_at or training.created_at
        timing = f"Elapsed {duration((now - since).total_seconds())}"
        eta = eta_seconds(training, now)
        if eta is not None:
            timing += f" · about {duration(eta)} left"
        lines.append(timing)
    elif training.completed_at:
        lines.append(
            f"Took {duration((training.completed_at - training.created_at).total_seconds())}"
        )
    if training.error:
        lines.append(f"Reason: {training.error}")
    embed.description = "\n".join(lines)
    embed.add_field(name="Trigger word", value=f"`{training.trigger_word}`")
    if training.user_id:
        embed.add_field(name="Requested by", value=f"<@{training.user_id}>")
    embed.set_footer(text=f"Job {training.id}")
    return embed


class TrainButton(IdButton):
    prefix = "train"


class CancelTrainingButton(
    TrainButton, CancelJobButton, DynamicButton, template=r"train:cancel:(?P<id>[\w-]+)"
):
    label = "Cancel training"
    gone_text = "This training no longer exists."
    refusal_text = (
        "Only the person who started this training, or someone with Manage Server, can cancel it."
    )
    moderator_permission = "manage_guild"

    async def find(self, interaction: discord.Interaction) -> OwnedJob | None:
        return await service_of(interaction).get(self.job_id)

    async def cancel(self, interaction: discord.Interaction) -> str:
        updated = await service_of(interaction).cancel(self.job_id)
        if updated.status == "canceled":
            return "Training canceled."
        return f"This training has already ended ({updated.status})."


class UseModelButton(TrainButton, DynamicButton, template=r"train:use:(?P<id>[\w-]+)"):
    action, label, style, emoji = (
        "use",
        "Generate with this model",
        discord.ButtonStyle.primary,
        "🎨",
    )

    async def run(self, interaction: discord.Interaction) -> None:
        training = await service_of(interaction).get(self.job_id)
        if training is None or training.status != "succeeded":
            await respond(interaction, "This model is not ready to use.", ephemeral=True)
            return
        await interaction.response.send_modal(PromptModal(training))


class PromptModal(discord.ui.Modal, title="Generate with your model"):
    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label="Prompt",
        custom_id="prompt",
        style=discord.TextStyle.paragraph,
        max_length=1000,
        min_length=1,
    )

    def __init__(self, training: Training) -> None:
        super().__init__(custom_id=f"train:prompt:{training.id}", timeout=None)
        self.training = training
        self.prompt.placeholder = f"a photo of {training.trigger_word} …"[:100]

    async def on_submit(self, interaction: discord.Interaction) -> None:
        note_shard(interaction)
        await bot_of(interaction).generate_cog.begin(
            interaction, prompt=self.prompt.value, model=self.training.model_ref
        )

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await report_error(interaction, error)


def completion_view(training: Training) -> discord.ui.View | None:
    if training.status != "succeeded":
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(UseModelButton(training.id))
    return view


def status_view(training: Training) -> discord.ui.View | None:
    if training.status not in ("starting", "processing"):
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(CancelTrainingButton(training.id))
    return view


def completion_text(training: Training) -> str:
    """The final notice, pinging the requester; names and errors quoted are neutral."""
    mention = f"<@{training.user_id}>"
    model_ref, trigger_word = neutral(training.model_ref), neutral(training.trigger_word)
    took = ""
    if training.completed_at:
        took = f" in {duration((training.completed_at - training.created_at).total_seconds())}"
    if training.status == "succeeded":
        version = (training.version or "").rpartition(":")[2]
        return (
            f"{mention} your model **{model_ref}** is ready{took}!\n"
            f"Version: `{version}` · trigger word: `{trigger_word}`\n"
            f"Use it with `/generate model:{model_ref}`."
        )
    if training.status == "canceled":
        return f"{mention} the training of **{model_ref}** was canceled."
    reason = neutral(training.error or "no reason given")
    return f"{mention} the training of **{model_ref}** failed: {reason}"[:2000]


class DiscordTrainingNotifier:
    """Status messages and final notices through the bot token (no interaction token)."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    async def _channel(self, channel_id: int) -> discord.abc.Messageable:
        # By id, over REST: the channel may be in a guild of another process's shard.
        channel = self.bot.get_partial_messageable(channel_id)
        return channel  # type: ignore[return-value]

    async def status_changed(self, training: Training) -> int | None:
        if training.channel_id is None:
            return None
        channel = await self._channel(training.channel_id)
        embed = status_embed(training)
        view = status_view(training)
        if training.status_message_id is not None:
            message = channel.get_partial_message(training.status_message_id)  # type: ignore[attr-defined]
            try:
                await edit(message, embed=embed, view=view)
                return training.status_message_id
            except discord.NotFound:
                log.info("status message of %s is gone; posting a new one", training.id)
        sent = await send(channel, embed=embed, view=view)  # type: ignore[arg-type]
        return sent.id

    async def finished(self, training: Training) -> bool:
        if training.channel_id is None:
            return True
        channel = await self._channel(training.channel_id)
        view = completion_view(training)
        kwargs = {"view": view} if view is not None else {}
        notice = await send(
            channel,
            completion_text(training),
            requester=training.user_id,
            nonce=training.notice_nonce,
            **kwargs,
        )
        if training.status == "succeeded":
            spawn(post_sample(self.bot, training, notice), name=f"sample-{training.id}")
        return True


async def train_allowed(interaction: discord.Interaction) -> bool:
    service = service_of(interaction)
    roles = [role.id for role in getattr(interaction.user, "roles", [])]
    needed = await service.roles_needed(interaction.guild_id, roles)
    if needed is not None:
        guild = interaction.guild
        named = [guild.get_role(r) if guild else None for r in needed]
        names = ", ".join(f"@{role.name}" for role in named if role is not None) or "(none)"
        raise Refused(
            f"Training is reserved for members with one of these roles: {neutral(names)}."
        )
    namespace = interaction.namespace
    try:
        check_names(str(namespace.trigger_word or ""), str(namespace.model_name or ""))
        await service.check_limits(user_key(interaction.user), interaction.guild_id)
        attachment = namespace.images
        if isinstance(attachment, discord.Attachment):
            service.check_upload(attachment.filename, attachment.size)
    except UserFacingError as exc:
        raise Refused(exc.user_message) from None
    return True


class Train(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        self.notifier = DiscordTrainingNotifier(bot)

    @property
    def service(self) -> TrainingService:
        return self.bot.services.trainings

    async def cog_load(self) -> None:
        """Lend the tracker (run by ``BotApp``) the Discord notifier."""
        self.bot.add_dynamic_items(CancelTrainingButton, UseModelButton)
        self.service.notifier = self.notifier

    async def cog_unload(self) -> None:
        self.service.notifier = None

    @app_commands.command(name="train", description="Train a FLUX LoRA on a zip of your photos")
    @app_commands.describe(
        images="A .zip of photos (jpg, png or webp; 10-30 good photos work well)",
        trigger_word="A word that will stand for your subject in prompts, like TOK",
        model_name="Name of the new model (lowercase letters, digits, - _ .)",
        steps="Training steps (100-4000, default 1000)",
    )
    @app_commands.guild_only()
    @app_commands.checks.bot_has_permissions(send_messages=True, embed_links=True)
    @app_commands.check(train_allowed)
    async def train(
        self,
        interaction: discord.Interaction,
        images: discord.Attachment,
        trigger_word: app_commands.Range[str, 2, 32],
        model_name: app_commands.Range[str, 1, 100],
        steps: app_commands.Range[int, 100, 4000] = 1000,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="train-"))
        try:
            await self._start(interaction, images, trigger_word, model_name, steps, folder)
        except (UserFacingError, ReplicateServiceError, ZipCheckError) as exc:
            text = exc.user_message
            if not text.startswith("❌"):
                text = f"❌ {text}"
            await edit_response(interaction, content=neutral(text)[:2000])
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _start(
        self,
        interaction: discord.Interaction,
        images: discord.Attachment,
        trigger_word: str,
        model_name: str,
        steps: int,
        folder: Path,
    ) -> None:
        service = self.service
        zip_path = folder / "images.zip"
        limit = service.zip_limits.max_zip_bytes
        async with self.bot.services.http.get(images.url) as response:
            if response.status != 200:
                raise UserFacingError("I could not download the attachment. Try again.")
            await download_to_file(response.content.iter_chunked(1 << 16), zip_path, limit)

        async def checked(report: object) -> None:
            await edit_response(interaction, content="📤 Zip looks good, uploading…")

        async def waiting(ahead: int) -> None:
            zips = "zip" if ahead == 1 else "zips"
            await edit_response(
                interaction, content=f"⏳ Checking, {ahead} {zips} ahead of yours. Hold on…"
            )

        started = await service.start(
            zip_path=zip_path,
            trigger_word=trigger_word,
            model_name=model_name,
            steps=steps,
            user_key=user_key(interaction.user),
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            declared_size=images.size,
            on_checked=checked,
            on_wait=waiting,
        )
        training = started.training
        message_id = await self.notifier.status_changed(training)
        if message_id is not None:
            await service.record_status_message(training.id, message_id)
        lines = [
            f"✅ Training of **{neutral(training.model_ref)}** started with "
            f"{started.report.image_count} images. I'll post progress in this channel and "
            "ping you when it's done."
        ]
        if started.report.warnings:
            lines.append(neutral("⚠️ " + "\n⚠️ ".join(started.report.warnings)))
        await edit_response(interaction, content="\n".join(lines)[:2000])

    @app_commands.command(name="trainings", description="Your recent trainings")
    @app_commands.guild_only()
    async def trainings(self, interaction: discord.Interaction) -> None:
        everyone = interaction.permissions.manage_guild
        rows = await self.service.recent(
            guild_id=interaction.guild_id,
            user_id=None if everyone else interaction.user.id,
            limit=15,
        )
        if not rows:
            await respond(interaction, "No trainings yet.", ephemeral=True)
            return
        now = datetime.now(UTC)
        lines = []
        for t in rows:
            age = duration((now - t.created_at).total_seconds())
            who = f" · <@{t.user_id}>" if everyone and t.user_id else ""
            step = f" {t.step}/{t.total_steps}" if t.status == "processing" and t.step else ""
            lines.append(
                f"{STATUS_WORDS.get(t.status, t.status)}{step} · **{neutral(t.model_ref)}** · "
                f"`{neutral(t.trigger_word)}` · {age} ago{who}"
            )
        title = "Trainings in this server" if everyone else "Your trainings"
        await respond(interaction, f"**{title}**\n" + "\n".join(lines)[:1900], ephemeral=True)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Train(bot))
