"""``POST /image/generate``: a prompt in, the image out, with the same limits, checks and
records as ``/generate`` in Discord."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from api.auth import requires_token
from api.bodies import check_fields, integer_field, read_json_object, string_field
from api.keys import SERVICES_KEY, USER_KEY
from api.problems import SERVICE_ERRORS, Problem, retry_after, service_problem
from services.generation import MAX_PROMPT, MAX_SEED, no_progress
from services.generation.requests import JobRequest
from services.settings import ASPECT_RATIOS

log = logging.getLogger(__name__)

#: A generation taking longer is canceled (also on Replicate) and answered with 504.
GENERATE_TIMEOUT = 300.0


@requires_token
async def generate(request: web.Request) -> web.Response:
    """Prompt in, image out: the same limits, checks and records as ``/generate``."""
    services = request.app[SERVICES_KEY]
    data = await read_json_object(request)
    check_fields(data, ("prompt", "model", "aspect_ratio", "seed"), ("prompt",))
    prompt = string_field(data, "prompt", MAX_PROMPT) or ""
    model_name = string_field(data, "model", 200)
    aspect_ratio = string_field(data, "aspect_ratio", 10)
    if aspect_ratio is not None and aspect_ratio not in ASPECT_RATIOS:
        raise Problem(422, f"`aspect_ratio` must be one of {', '.join(ASPECT_RATIOS)}.")
    seed = integer_field(data.get("seed"), "seed", 0, MAX_SEED)

    key = request[USER_KEY]
    generations = services.generations
    limit = services.settings.max_output_mb * 1024 * 1024
    deadline = asyncio.timeout(GENERATE_TIMEOUT)
    try:
        model = await generations.models.resolve(model_name, guild_id=None)
        request = JobRequest(prompt=prompt, model=model, aspect_ratio=aspect_ratio, seed=seed)
        generation = await generations.create(request, user_key=key, source="api")
        log.info("api generation %s with %s", generation.id, model.ref)
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
        raise Problem(
            503, "The generation was canceled (the server is stopping).", headers=retry_after(60)
        )
    image = outcome.images[0]
    stored = outcome.generation
    seed_used = stored.seed if stored.seed is not None else stored.params.get("seed")
    extension = image.filename.rpartition(".")[2] or "png"
    headers = {
        "X-Seed": str(seed_used),
        "X-Prediction-Id": outcome.result.prediction_id,
        "X-Generation-Id": stored.id,
        "Content-Disposition": f'inline; filename="{stored.id}.{extension}"',
    }
    return web.Response(body=image.data, content_type=image.content_type, headers=headers)
