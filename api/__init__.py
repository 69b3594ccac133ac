"""The HTTP API, the bot's second front end beside ``cogs/``: one aiohttp application
that shares the process's services (limits, quotas, store) with the Discord front end.

Routes and answers are described in ``api/openapi.json``, served at ``GET /openapi.json``.

- ``GET /ping``, ``GET /healthz``, ``GET /openapi.json``, ``GET /docs`` (Swagger UI): open.
- ``POST /webhooks/replicate``: authenticated by the delivery's signature.
- ``/image/...`` and ``GET /usage``: ``Authorization: Bearer <key>``, ``API_TOKEN`` or a
  key made with ``python bot.py api-keys`` (:mod:`api.auth`, :mod:`api.keys_cli`).
- ``GET /metrics``: Prometheus metrics, behind ``METRICS_TOKEN`` when it is set.

Every error is ``application/problem+json`` (:mod:`api.problems`). Bodies are
size-limited and must arrive in time (:mod:`api.bodies`).
"""

from api.auth import api_user_key
from api.routes.health import OPENAPI_PATH
from api.server import WebServer, WebServerError, create_web_app

__all__ = ["OPENAPI_PATH", "WebServer", "WebServerError", "api_user_key", "create_web_app"]
