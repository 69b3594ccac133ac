"""How a job shows in Discord: its progress view (Cancel), its result (embed, files, and
the buttons under it: U and V per image, Reroll, Remix, Details, Delete) and its details."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import discord

from cogs._actions import action_items, remix_button
from cogs._buttons import CancelJobButton, OwnedJob, may_act
from cogs._common import DynamicButton, IdButton, bot_of
from cogs._messages import neutral, respond
from services.generation import GenerationService, Outcome
from services.store import Generation

EMBED_PROMPT = 1000
REQUEST_LIMIT = 25 * 1024 * 1024
"""Discord's limit on one request with its files."""
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
"""Discord's per-file limit when no interaction says otherwise."""
_KIND_TITLES = {"upscale": "Upscaled", "vary": "Variations"}


def service_of(interaction: discord.Interaction) -> GenerationService:
    return bot_of(interaction).services.generations


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


def _source_text(generation: Generation) -> str | None:
    params = generation.params
    sources = params.get("sources") or []
    if not sources:
        return None
    first = sources[0]
    if first.get("generation"):
        return f"image {int(first.get('index', 0)) + 1} of job `{first['generation']}`"
    names = neutral(", ".join(str(s.get("filename") or "an attachment") for s in sources))
    return names[:200]


def details_text(generation: Generation) -> str:
    params = generation.params
    kind = params.get("kind", "generate")
    seed = generation.seed if generation.seed is not None else params.get("seed")
    lines = [
        f"**Prompt:** {neutral(generation.prompt)}",
        f"**Model:** `{generation.model}`",
        f"**Aspect ratio:** {params.get('aspect_ratio') or 'the model’s'} · "
        f"**Images:** {params.get('count')}",
        f"**Seed:** {seed if seed is not None else 'none'}",
        f"**Status:** {generation.status}",
    ]
    if kind != "generate":
        lines.insert(0, f"**Kind:** {kind}")
    source = _source_text(generation)
    if source:
        lines.append(f"**Input image:** {source}")
    if params.get("strength") is not None:
        lines.append(f"**Strength:** {params['strength']:g}")
    if params.get("lora_scale") is not None:
        lines.append(f"**LoRA scale:** {params['lora_scale']:g}")
    if len(params.get("parts") or []) > 1:
        lines.append(f"**Predictions:** {len(params['parts'])}")
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
    params = generation.params
    prompt = neutral(generation.prompt)
    if len(prompt) > EMBED_PROMPT:
        prompt = prompt[: EMBED_PROMPT - 1] + "…"
    embed = discord.Embed(description=prompt, colour=discord.Colour.blurple())
    title = _KIND_TITLES.get(params.get("kind", "generate"))
    source = _source_text(generation)
    if title:
        embed.title = f"{title} of {source}"[:256] if source else title
    embed.add_field(name="Model", value=f"`{generation.model[:200]}`", inline=False)
    if generation.seed is not None or params.get("kind") != "upscale":
        embed.add_field(name="Seed", value=str(generation.seed))
    if params.get("aspect_ratio") or "parts" not in params:
        embed.add_field(name="Aspect ratio", value=str(params.get("aspect_ratio")))
    if params.get("strength") is not None:
        embed.add_field(name="Strength", value=f"{params['strength']:g}")
    if params.get("lora_scale") is not None:
        embed.add_field(name="LoRA scale", value=f"{params['lora_scale']:g}")
    if took is not None:
        embed.add_field(name="Time", value=f"{took:.1f} s")
    if generation.user_id is not None:
        embed.add_field(name="Requested by", value=f"<@{generation.user_id}>")
    if params.get("trigger_prepended"):
        embed.add_field(name="Trigger word", value=f"`{params.get('trigger_word')}` was added")
    if any(image.reencoded for image in outcome.images):
        embed.set_footer(text="Some images were re-encoded to fit Discord's upload limit.")
    return embed


def result_files(outcome: Outcome) -> list[discord.File]:
    return [
        discord.File(io.BytesIO(image.data), filename=f"{index}-{image.filename}")
        for index, image in enumerate(outcome.images)
    ]


class WireView(discord.ui.View):
    """Persistent buttons as they go on the wire.

    Every button under a job is a ``DynamicItem`` registered at start, which routes its
    clicks from the ``custom_id`` alone (as after a restart): the message needs no view
    object kept in discord.py's view store, only its components. Those are built once per
    shape by the ordinary views (with a stand-in id) and copied with the job's id, which
    spares a burst of results thousands of item objects."""

    def __init__(self, components: list[dict[str, Any]]) -> None:
        super().__init__(timeout=None)
        self._components = components

    def to_components(self) -> list[dict[str, Any]]:
        return self._components


_STAND_IN = "job-id-stand-in"
_wire_templates: dict[tuple[Any, ...], list[dict[str, Any]]] = {}


def _wired(
    shape: tuple[Any, ...], job_id: str, build: Callable[[str], discord.ui.View]
) -> WireView:
    template = _wire_templates.get(shape)
    if template is None:
        template = _wire_templates[shape] = build(_STAND_IN).to_components()
    return WireView(
        [
            {
                **row,
                "components": [
                    {**c, "custom_id": c["custom_id"].replace(_STAND_IN, job_id)}
                    for c in row["components"]
                ],
            }
            for row in template
        ]
    )


def result_view(generation: Generation, count: int) -> discord.ui.View:
    """The buttons under a result of ``count`` images: U and V per image (no U for an
    upscale), then Reroll, Remix, Details and Delete; at most 4 rows of 5."""
    params = generation.params
    # Everything build_result_view reads of the job besides its id.
    shape = ("result", params.get("kind"), bool(params.get("parent")), count)

    def build(job_id: str) -> discord.ui.View:
        return build_result_view(replace(generation, id=job_id), count)

    return _wired(shape, generation.id, build)


def build_result_view(generation: Generation, count: int) -> discord.ui.View:
    """:func:`result_view` built item by item."""
    view = discord.ui.View(timeout=None)
    items: list[discord.ui.Item[Any]] = action_items(generation, count)
    last = 2 if items else 0
    if generation.params.get("kind") != "upscale":
        items.append(_in_row(RerollButton(generation.id), last))
    remix = remix_button(generation, last)
    if remix is not None:
        items.append(remix)
    items.append(_in_row(DetailsButton(generation.id), last))
    items.append(_in_row(DeleteButton(generation.id), last))
    for item in items:
        view.add_item(item)
    return view


def reroll_view(gen_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(gen_id))
    return view


def progress_view(gen_id: str) -> discord.ui.View:
    return _wired(("progress",), gen_id, build_progress_view)


def build_progress_view(gen_id: str) -> discord.ui.View:
    """:func:`progress_view` built item by item."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(gen_id))
    return view


def _in_row(item: discord.ui.Item[Any], row: int) -> discord.ui.Item[Any]:
    item.row = row
    return item


BUTTONS = (CancelButton, RerollButton, DetailsButton, DeleteButton)
