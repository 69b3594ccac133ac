"""``POST /image/upscale``: an image in, the image upscaled by ``UPSCALE_MODEL`` out, with
the same limits and records as a generation (it is one)."""

from __future__ import annotations

from aiohttp import web

from api.auth import requires_token
from api.images import read_image_request
from api.keys import SERVICES_KEY
from api.routes.generate import run_job
from services.generation import ResolvedModel
from services.generation.requests import JobRequest


@requires_token
async def upscale(request: web.Request) -> web.Response:
    """Image in, upscaled image out."""
    services = request.app[SERVICES_KEY]
    body = await read_image_request(request, services, (), ("image",))
    assert body.image is not None
    job = JobRequest(
        prompt=f"(upscale of {body.filename[:100]})",
        model=ResolvedModel(services.settings.upscale_model),
        kind="upscale",
        sources=body.sources,
        images=(body.image,),
    )
    return await run_job(request, job)
