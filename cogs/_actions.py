"""The buttons that keep working on a result: ``U1``…``U4`` upscale an image, ``V1``…``V4``
make variations of it, ``Remix`` opens a modal to edit the prompt and the other options.

Each starts an ordinary job through the /generate cog (same limits, quota, queue,
progress message, Cancel and result), charged to whoever presses it, as Reroll is. The
buttons are ``DynamicItem``s: they work on results posted before a restart."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

import discord

from cogs._common import DynamicButton, Refused, bot_of, note_shard, report_error
from services.generation import GenerationService, ResolvedModel
from services.generation.actions import reroll_of
from services.generation.jobs import MAX_PROMPT, MAX_SEED, Reroll
from services.generation.requests import ImageSource, JobRequest
from services.settings import ASPECT_RATIOS
from services.store import Generation

if TYPE_CHECKING:
    from cogs.generate import Generate

GONE = "These images are no longer available."


def _service(interaction: discord.Interaction) -> GenerationService:
    return bot_of(interaction).services.generations


def _cog(interaction: discord.Interaction) -> Generate:
    return bot_of(interaction).generate_cog


def image_count(generation: Generation) -> int:
    """How many images the job's result shows."""
    outputs = generation.params.get("outputs")
    if isinstance(outputs, list) and outputs:
        return len(outputs)
    return int(generation.params.get("count") or 1)


async def succeeded(interaction: discord.Interaction, gen_id: str) -> Generation:
    generation = await _service(interaction).get(gen_id)
    if generation is None or generation.status != "succeeded":
        raise Refused(GONE)
    return generation


class ImageButton:
    """Mixin for ``gen:<action>:<job id>:<n>`` buttons that act on image ``n`` (1-based)."""

    action: ClassVar[str] = ""
    letter: ClassVar[str] = ""
    style: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary

    def __init__(self, job_id: str, number: int, row: int | None = None) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=f"{self.letter}{number}",
            style=self.style,
            custom_id=f"gen:{self.action}:{job_id}:{number}",
            row=row,
        )
        super().__init__(button)  # type: ignore[call-arg]
        self.job_id = job_id
        self.number = number

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> Any:
        return cls(match["id"], int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        note_shard(interaction)
        try:
            await self.run(interaction)
        except Exception as exc:
            await report_error(interaction, exc)

    async def run(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError

    async def parent(self, interaction: discord.Interaction) -> Generation:
        generation = await succeeded(interaction, self.job_id)
        if self.number > image_count(generation):
            raise Refused(GONE)
        return generation

    def source(self, parent: Generation) -> ImageSource:
        return ImageSource(generation=parent.id, index=self.number - 1)


class UpscaleButton(ImageButton, DynamicButton, template=r"gen:up:(?P<id>[\w-]+):(?P<n>[1-9])"):
    action, letter = "up", "U"

    async def run(self, interaction: discord.Interaction) -> None:
        settings = bot_of(interaction).settings
        parent = await self.parent(interaction)

        async def prepare() -> JobRequest:
            return JobRequest(
                prompt=parent.prompt,
                model=ResolvedModel(settings.upscale_model),
                kind="upscale",
                sources=(self.source(parent),),
                parent=parent.id,
            )

        await _cog(interaction).start(interaction, prepare)


class VaryButton(ImageButton, DynamicButton, template=r"gen:vary:(?P<id>[\w-]+):(?P<n>[1-9])"):
    action, letter = "vary", "V"

    async def run(self, interaction: discord.Interaction) -> None:
        settings = bot_of(interaction).settings
        parent = await self.parent(interaction)
        again = reroll_of(parent)
        if again.trigger_word:  # made by a trained model: vary on it
            model = ResolvedModel(parent.model, trigger_word=again.trigger_word)
        else:
            model = ResolvedModel(settings.vary_model)
        count = again.count if again.kind != "upscale" else 1

        async def prepare() -> JobRequest:
            return JobRequest(
                prompt=again.prompt,
                model=model,
                kind="vary",
                aspect_ratio=again.aspect_ratio,
                count=count,
                strength=settings.vary_strength,
                lora_scale=again.lora_scale,
                sources=(self.source(parent),),
                parent=parent.id,
            )

        await _cog(interaction).start(interaction, prepare)


async def model_for(cog: Generate, again: Reroll, guild_id: int | None) -> ResolvedModel:
    """The model to run a job's request again on: a generation's model must still be
    offered here; a variation keeps its model (VARY_MODEL or the trained one)."""
    if again.kind == "generate":
        return await cog.service.models.resolve(again.model, guild_id)
    return ResolvedModel(again.model, trigger_word=again.trigger_word)


class RemixButton(DynamicButton, template=r"gen:remix:(?P<id>[\w-]+)"):
    def __init__(self, job_id: str, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label="Remix",
                style=discord.ButtonStyle.secondary,
                emoji="🎛️",
                custom_id=f"gen:remix:{job_id}",
                row=row,
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> RemixButton:
        return cls(match["id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        note_shard(interaction)
        try:
            generation = await succeeded(interaction, self.job_id)
            await interaction.response.send_modal(RemixModal(generation))
        except Exception as exc:
            await report_error(interaction, exc)


class RemixModal(discord.ui.Modal):
    """The job's request, every option shown and editable; the prompt first."""

    def __init__(self, generation: Generation) -> None:
        super().__init__(title="Remix", custom_id=f"gen:remixed:{generation.id}", timeout=None)
        self.generation = generation
        self.again = again = reroll_of(generation)
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Prompt",
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            default=again.prompt[:MAX_PROMPT],
            min_length=1,
            max_length=MAX_PROMPT,
        )
        self.aspect_ratio: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Aspect ratio",
            custom_id="aspect_ratio",
            default=again.aspect_ratio or "",
            required=False,
            max_length=10,
            placeholder=" ".join(ASPECT_RATIOS),
        )
        self.count: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Images (1-4)", custom_id="count", default=str(again.count), max_length=1
        )
        self.seed: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Seed (empty: a new one)", custom_id="seed", required=False, max_length=10
        )
        for item in (self.prompt, self.aspect_ratio, self.count, self.seed):
            self.add_item(item)
        self.extra: discord.ui.TextInput[RemixModal] | None = None
        if again.sources:
            self.extra = discord.ui.TextInput(
                label="Strength (0-1; 1 ignores the image)",
                custom_id="strength",
                default="" if again.strength is None else f"{again.strength:g}",
                required=False,
                max_length=6,
            )
        elif again.trigger_word:
            self.extra = discord.ui.TextInput(
                label="LoRA scale (empty: the model's default)",
                custom_id="lora_scale",
                default="" if again.lora_scale is None else f"{again.lora_scale:g}",
                required=False,
                max_length=6,
            )
        if self.extra is not None:
            self.add_item(self.extra)

    def changes(self) -> dict[str, Any]:
        """What the form says, checked; raises :class:`Refused` for a value that is not."""
        changes: dict[str, Any] = {"prompt": self.prompt.value}
        ratio = self.aspect_ratio.value.strip()
        if ratio and ratio not in ASPECT_RATIOS:
            raise Refused(f"Aspect ratio must be one of {', '.join(ASPECT_RATIOS)}.")
        changes["aspect_ratio"] = ratio or None
        changes["count"] = _number(self.count.value, "Images", int, 1, 4)
        seed = self.seed.value.strip()
        changes["seed"] = _number(seed, "Seed", int, 0, MAX_SEED) if seed else None
        if self.extra is not None:
            text = self.extra.value.strip()
            name = self.extra.custom_id
            low, high = (0.0, 1.0) if name == "strength" else (-10.0, 10.0)
            label = "Strength" if name == "strength" else "LoRA scale"
            changes[name] = _number(text, label, float, low, high) if text else None
        return changes

    async def on_submit(self, interaction: discord.Interaction) -> None:
        note_shard(interaction)
        changes = self.changes()
        cog = _cog(interaction)
        again = self.again

        async def prepare() -> JobRequest:
            model = await model_for(cog, again, interaction.guild_id)
            return JobRequest(
                prompt=changes.pop("prompt"),
                model=model,
                kind=again.kind,
                strength=again.strength,
                lora_scale=again.lora_scale,
                sources=again.sources,
                parent=self.generation.id,
                **changes,
            )

        await cog.start(interaction, prepare)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await report_error(interaction, error)


def _number(text: str, label: str, kind: type, low: float, high: float) -> Any:
    try:
        value = kind(text.strip().replace(",", "."))
    except ValueError:
        raise Refused(f"{label} must be a number from {low:g} to {high:g}.") from None
    if not low <= value <= high:
        raise Refused(f"{label} must be a number from {low:g} to {high:g}.")
    return value


def action_items(generation: Generation, count: int) -> list[discord.ui.Item[Any]]:
    """U and V buttons for a result of ``count`` images (none U for an upscale), each
    kind on its own row."""
    kind = generation.params.get("kind", "generate")
    items: list[discord.ui.Item[Any]] = []
    numbers = range(1, min(count, 4) + 1)
    if kind != "upscale":
        items += [UpscaleButton(generation.id, n, row=0) for n in numbers]
    if kind != "upscale" or generation.params.get("parent"):
        items += [VaryButton(generation.id, n, row=1) for n in numbers]
    return items


def remix_button(generation: Generation, row: int) -> RemixButton | None:
    if generation.params.get("kind") == "upscale":
        return None
    return RemixButton(generation.id, row=row)


__all__ = [
    "RemixButton",
    "RemixModal",
    "UpscaleButton",
    "VaryButton",
    "action_items",
    "model_for",
    "remix_button",
]
