"""A local emulator of the Replicate HTTP API, for tests that run the real client.

Two aiohttp servers on 127.0.0.1:

- the API, at the host root (client ``base_url = emu.base_url``), routes under ``/v1``,
  every exchange checked against the official OpenAPI document
  (:mod:`tests.emulators.spec`);
- an HTTPS file server (trustme certificate) for outputs, because the client only turns
  ``https:`` and ``data:`` strings into files: an ``http:`` output stays a plain string.

Behaviour follows the ``replicate`` 1.0.7 client and the real service: problem+json
errors, 401 for a wrong bearer token, ``Prefer: wait`` held up to n seconds, trainings
that need an existing destination and end with ``{version: "owner/name:<64 hex>",
weights}``, a new version on the destination so ``owner/name:version`` can be run,
signed webhook deliveries with retries.

Models: black-forest-labs/flux-schnell and flux-dev (official: run by name),
nightmareai/real-esrgan (run by version; one image in, one URI out, ``scale`` times
bigger), ostris/flux-dev-lora-trainer and every version a training pushes. Each
version carries the OpenAPI document Cog publishes (:mod:`.schemas`), served by
``GET /v1/models/{owner}/{name}`` (``latest_version.openapi_schema``) and the versions
routes; a prediction whose ``input`` does not fit it gets Replicate's 422
(:mod:`.validation`). File inputs (``format: uri``) may be data URIs, URLs of files
uploaded through ``/v1/files``, the emulator's own output URLs or any http(s) URL (then
fetched); what each prediction read is recorded (``emu.received_images``,
``emu.received_image()``), and an image input shapes the output like the input.

Tests script it with plain attributes and methods (see :class:`ReplicateEmulator`);
they wait on state changes with :meth:`ReplicateEmulator.wait_for`, never with sleeps.

Where things are:

- ``emulator.py``: :class:`ReplicateEmulator`, the facade;
- ``state.py``: what it knows and records, the knobs, the seeded models, waiting;
- ``schemas.py``: the models' Cog documents; ``validation.py``: inputs against them;
- ``model.py``: models, versions, jobs, files, received images, deliveries, scripts;
- ``server.py``: the servers and the middleware (records, token, scripted faults);
  ``routes.py``, ``routes_jobs.py``: the API's routes (predictions and trainings in the latter);
- ``jobs.py``: jobs running (state changes, file inputs read, outputs made);
  ``images.py``: the pictures; ``webhooks.py``: deliveries and :class:`WebhookReceiver`;
- ``controls.py``: what tests script (faults, models, expiry).
"""

from tests.emulators.replicate.common import (
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    FLUX_DEV,
    FLUX_SCHNELL,
    NSFW_LORA,
    NSFW_OFFICIAL,
    TRAINER_MODEL,
    TRAINER_VERSION,
    TRAINER_VERSION_ID,
    UPSCALER_MODEL,
    UPSCALER_VERSION,
    UPSCALER_VERSION_ID,
    ZIP_ERROR,
)
from tests.emulators.replicate.emulator import ReplicateEmulator
from tests.emulators.replicate.images import render_image, render_large_png
from tests.emulators.replicate.model import (
    Job,
    Model,
    ReceivedImage,
    StoredFile,
    Version,
    WebhookDelivery,
)
from tests.emulators.replicate.schemas import (
    ASPECT_RATIOS,
    DEV_SCHEMA,
    LORA_SCHEMA,
    SCHNELL_SCHEMA,
    TRAINER_SCHEMA,
    UPSCALER_SCHEMA,
    CogInputs,
    cog_schema,
)
from tests.emulators.replicate.webhooks import WebhookReceiver

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT_TOKEN",
    "DEFAULT_USERNAME",
    "DEV_SCHEMA",
    "FLUX_DEV",
    "FLUX_SCHNELL",
    "LORA_SCHEMA",
    "NSFW_LORA",
    "NSFW_OFFICIAL",
    "SCHNELL_SCHEMA",
    "TRAINER_MODEL",
    "TRAINER_SCHEMA",
    "TRAINER_VERSION",
    "TRAINER_VERSION_ID",
    "UPSCALER_MODEL",
    "UPSCALER_SCHEMA",
    "UPSCALER_VERSION",
    "UPSCALER_VERSION_ID",
    "ZIP_ERROR",
    "CogInputs",
    "Job",
    "Model",
    "ReceivedImage",
    "ReplicateEmulator",
    "StoredFile",
    "Version",
    "WebhookDelivery",
    "WebhookReceiver",
    "cog_schema",
    "render_image",
    "render_large_png",
]
