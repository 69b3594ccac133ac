"""``POST /webhooks/replicate``: authenticated by the delivery's signature, handed to the
shared webhook dispatch."""

from __future__ import annotations

import logging

from aiohttp import web

from api.bodies import read_body
from api.keys import SERVICES_KEY
from api.problems import Problem, problem
from services.replicate import ReplicateServiceError
from services.webhooks import WebhookVerificationError

log = logging.getLogger(__name__)

MAX_WEBHOOK_BODY = 1024 * 1024


async def replicate_webhook(request: web.Request) -> web.Response:
    """Verify the signature before anything else; a bad one changes nothing."""
    services = request.app[SERVICES_KEY]
    body = await read_body(request, MAX_WEBHOOK_BODY)
    try:
        outcome = await services.webhooks.handle(request.headers, body)
    except WebhookVerificationError as exc:
        log.info("webhook refused: %s", exc)
        return problem(401, "Unauthorized", "Missing, invalid or stale webhook signature.")
    except ReplicateServiceError as exc:
        # The signing secret could not be fetched: Replicate retries the delivery later.
        log.warning("webhook not verified: %s", exc)
        raise Problem(503, "The webhook secret is not available yet.") from None
    return web.json_response({"status": outcome})
