"""Checking a job request before it is admitted: the prompt, the limits every job
shares, and the options against what the model takes (read from Replicate and cached:
``ReplicateService.schemas``); and the request behind a stored job, to run it again."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Final

from services.errors import UserFacingError
from services.generation.jobs import MAX_PROMPT, MAX_SEED, Reroll
from services.generation.models import ModelCatalog, ResolvedModel
from services.generation.requests import JobRequest, no_image, plan, sources_of
from services.model_inputs import ModelInputs
from services.replicate import ReplicateService, ReplicateServiceError
from services.settings import ASPECT_RATIOS, Settings
from services.store import Generation
from services.tasks import spawn

log = logging.getLogger(__name__)

#: How long the list of models that take an image may take to read.
IMAGE_MODELS_TIMEOUT: Final = 5.0
MAX_COUNT: Final = 4


class JobPlanner:
    def __init__(
        self, settings: Settings, replicate: ReplicateService, models: ModelCatalog
    ) -> None:
        self.settings = settings
        self.replicate = replicate
        self.models = models
        self._reading: set[str] = set()

    async def inputs(self, model: str) -> ModelInputs:
        """What ``model`` takes (cached)."""
        return await self.replicate.schemas.inputs(model)

    async def params(self, request: JobRequest, guild_id: int | None) -> tuple[str, dict[str, Any]]:
        """The prompt to store and the job's ``params``; raises :class:`UserFacingError`
        for anything that does not fit, before anything is spent."""
        prompt = request.prompt.strip()
        if request.kind != "upscale":
            if not prompt:
                raise UserFacingError("The prompt is empty.")
            if len(prompt) > MAX_PROMPT:
                raise UserFacingError(f"The prompt is too long ({len(prompt)} > {MAX_PROMPT}).")
        if request.aspect_ratio is not None and request.aspect_ratio not in ASPECT_RATIOS:
            raise UserFacingError(f"Aspect ratio must be one of {', '.join(ASPECT_RATIOS)}.")
        if not 1 <= request.count <= MAX_COUNT:
            raise UserFacingError(f"Count must be between 1 and {MAX_COUNT}.")
        if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
            raise UserFacingError(f"Seed must be between 0 and {MAX_SEED}.")
        if request.strength is not None and not 0 <= request.strength <= 1:
            raise UserFacingError("Strength must be between 0 and 1.")
        model = request.model
        trigger_prepended = False
        if (
            request.kind != "upscale"
            and model.trigger_word
            and model.trigger_word.lower() not in prompt.lower()
        ):
            prompt = f"{model.trigger_word} {prompt}"[:MAX_PROMPT]
            trigger_prepended = True
        inputs = await self.inputs(model.ref)
        image_models: list[str] = []
        if request.sources and inputs.takes_image is None and request.kind == "generate":
            image_models = await self.image_models(guild_id)
        params = plan(
            dataclasses.replace(request, prompt=prompt),
            inputs,
            image_models=image_models,
            upscale_scale=self.settings.upscale_scale,
        )
        params["trigger_word"] = model.trigger_word
        params["trigger_prepended"] = trigger_prepended
        return prompt or "(upscale)", params

    async def require_image(self, model: str, guild_id: int | None) -> None:
        """Refuse, naming the offered models that do, if ``model`` takes no input image."""
        if (await self.inputs(model)).takes_image is None:
            raise UserFacingError(no_image(model, "generate", await self.image_models(guild_id)))

    async def image_models(self, guild_id: int | None) -> list[str]:
        """The offered models that take an input image (those that can be read now)."""
        offered = [value for _, value in await self.models.choices(guild_id)]

        async def takes_image(model: str) -> bool:
            try:
                return (await self.inputs(model)).takes_image is not None
            except ReplicateServiceError:
                return False

        try:
            async with asyncio.timeout(IMAGE_MODELS_TIMEOUT):
                found = await asyncio.gather(*(takes_image(m) for m in offered))
        except TimeoutError:
            found = [
                (cached := self.replicate.schemas.cached(m)) is not None
                and cached.takes_image is not None
                for m in offered
            ]
        return [model for model, yes in zip(offered, found, strict=True) if yes]

    def label(self, model: str) -> str:
        """What the autocomplete adds to a model's name, from what is known at once; a
        model not read yet is read in the background, for the next keystroke."""
        known = self.replicate.schemas.cached(model)
        if known is None:
            if model not in self._reading:
                self._reading.add(model)
                task = spawn(self.warm([model]), name=f"read-inputs-{model}")
                task.add_done_callback(lambda _: self._reading.discard(model))
            return ""
        return "takes an image" if known.takes_image is not None else ""

    async def warm(self, models: list[str]) -> None:
        """Read what ``models`` take ahead of their first use (failures only logged)."""
        for model in models:
            try:
                await self.inputs(model)
            except ReplicateServiceError as exc:
                log.warning("could not read the inputs of %s: %s", model, exc)


def reroll_of(generation: Generation) -> Reroll:
    """The job's request as its requester made it, to run again with a new seed.

    A trigger word the bot added to the prompt is taken out again: the new job adds it
    anew if the model still needs it."""
    params = generation.params
    prompt = generation.prompt
    trigger = params.get("trigger_word")
    if params.get("trigger_prepended") and trigger:
        prompt = prompt.removeprefix(f"{trigger} ")
    return Reroll(
        prompt=prompt,
        model=generation.model,
        aspect_ratio=params.get("aspect_ratio"),
        count=params.get("count", 1),
        kind=params.get("kind", "generate"),
        strength=params.get("strength"),
        lora_scale=params.get("lora_scale"),
        sources=tuple(sources_of(params)),
        trigger_word=trigger,
        parent=params.get("parent"),
    )


def request_of(again: Reroll, model: ResolvedModel, **changes: Any) -> JobRequest:
    """A new request like ``again`` (a new seed unless ``changes`` give one)."""
    fields: dict[str, Any] = {
        "prompt": again.prompt,
        "model": model,
        "kind": again.kind,
        "aspect_ratio": again.aspect_ratio,
        "count": again.count,
        "strength": again.strength,
        "lora_scale": again.lora_scale,
        "sources": again.sources,
        "parent": again.parent,
    }
    fields.update(changes)
    return JobRequest(**fields)
