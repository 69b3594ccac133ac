"""``POST /image/generate``: a prompt (and maybe an input image) in, the image out, with
the same limits, checks and records as ``/generate`` in Discord."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from api.auth import requires_token
from api.bodies import integer_field, string_field
from api.images import number_field, read_image_request
from api.keys import SERVICES_KEY, USER_KEY
from api.problems import SERVICE_ERRORS, Problem, retry_after, service_problem
from services.generation import MAX_PROMPT, MAX_SEED, no_progress
from services.generation.requests import JobRequest
from services.settings import ASPECT_RATIOS

log = logging.getLogger(__name__)

#: A generation taking longer is canceled (also on Replicate) and answered with 504.
GENERATE_TIMEOUT = 300.0
GENERATE_FIELDS = ("prompt", "model", "aspect_ratio", "seed", "strength")


@requires_token
async def generate(request: web.Request) -> web.Response:
    """Prompt (and maybe an image) in, image out: the same limits, checks and records as
    ``/generate``."""
    services = request.app[SERVICES_KEY]
    body = await read_image_request(request, services, GENERATE_FIELDS, ("prompt",))
    data, form = body.fields, body.form
    prompt = string_field(data, "prompt", MAX_PROMPT) or ""
    model_name = string_field(data, "model", 200) or None
    aspect_ratio = string_field(data, "aspect_ratio", 10) or None
    if aspect_ratio is not None and aspect_ratio not in ASPECT_RATIOS:
        raise Problem(422, f"`aspect_ratio` must be one of {', '.join(ASPECT_RATIOS)}.")
    raw_seed = data.get("seed")
    seed = integer_field(None if raw_seed == "" else raw_seed, "seed", 0, MAX_SEED, text=form)
    strength = number_field(data.get("strength"), "strength", 0, 1, text=form)
    try:
        model = await services.generations.models.resolve(model_name, guild_id=None)
        if body.image is not None:
            await services.generations.planner.require_image(model.ref, None)
    except SERVICE_ERRORS as exc:
        raise service_problem(exc) from None
    job = JobRequest(
        prompt=prompt,
        model=model,
        aspect_ratio=aspect_ratio,
        seed=seed,
        strength=strength,
        sources=body.sources,
        images=(body.image,) if body.image is not None else (),
    )
    return await run_job(request, job)


async def run_job(request: web.Request, job: JobRequest) -> web.Response:
    """Admit ``job`` for the caller, wait for it, and answer its first image."""
    services = request.app[SERVICES_KEY]
    generations = services.generations
    limit = services.settings.max_output_mb * 1024 * 1024
    deadline = asyncio.timeout(GENERATE_TIMEOUT)
    try:
        generation = await generations.create(job, user_key=request[USER_KEY], source="api")
        log.info("api %s %s with %s", job.kind, generation.id, job.model.ref)
        async with deadline:
            outcome = await generations.run(
                generation, no_progress, size_limit=limit, total_limit=limit
            )
    except SERVICE_ERRORS as exc:
        raise service_problem(exc) from None
    except TimeoutError:
        raise Problem(504, "The image took too long; the generation was canceled.") from None
    if outcome.result is None or not outcome.images:
        if deadline.expired():
            raise Problem(504, "The image took too long; the generation was canceled.")
        stored = outcome.generation
        if stored.status == "failed" and stored.error:
            raise Problem(422, stored.error)
        raise Problem(
            503, "The generation was canceled (the server is stopping).", headers=retry_after(60)
        )
    image = outcome.images[0]
    stored = outcome.generation
    seed_used = stored.seed if stored.seed is not None else stored.params.get("seed")
    extension = image.filename.rpartition(".")[2] or "png"
    headers = {
        "X-Prediction-Id": outcome.result.prediction_id,
        "X-Generation-Id": stored.id,
        "Content-Disposition": f'inline; filename="{stored.id}.{extension}"',
    }
    if seed_used is not None:
        headers["X-Seed"] = str(seed_used)
    return web.Response(body=image.data, content_type=image.content_type, headers=headers)
