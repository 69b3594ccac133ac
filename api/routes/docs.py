"""Interactive documentation of the HTTP API at ``GET /docs``: Swagger UI for the OpenAPI
document served at ``/openapi.json``.

Every file of the page comes from the pinned ``swagger-ui-bundle-v2`` package and is
served by the bot itself, so the page works on a machine without internet access. None of
these routes needs the API token: the page's "Authorize" button takes it, and sends it
with the requests a person tries.

The page runs no inline script (its start-up script is a file of its own), and it is
served with a Content-Security-Policy that lets it load and fetch from the bot's own
origin only. Every answer carries an ``ETag`` (a hash of its bytes) and a
``Cache-Control``; a matching ``If-None-Match`` is answered ``304 Not Modified``.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

log = logging.getLogger(__name__)

DOCS_PATH = "/docs"

#: The page loads and fetches from the bot's own origin only (``default-src 'none'``
#: refuses whatever is not listed). Swagger UI needs two more image sources, both inside
#: the page: ``data:`` (the icons inlined in its stylesheet) and ``blob:`` (an image
#: answer is shown from a blob URL). No inline script or style is allowed: the start-up
#: script is a file, and React sets styles through the DOM, which the policy leaves be.
#: No other site may frame the page (``frame-ancestors``), and injected markup could
#: neither re-base its URLs nor submit a form (``base-uri``, ``form-action``).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

#: The page (and so the asset URLs it names) is revalidated on every visit...
PAGE_CACHE = "no-cache"
#: ...while the assets, whose URLs carry a hash of their bytes, are kept for a week.
ASSET_CACHE = "public, max-age=604800"

#: Files served from the package, under ``/docs/<name>``, with their content type.
VENDOR_FILES: Mapping[str, str] = {
    "swagger-ui.css": "text/css",
    "index.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
INITIALIZER = "swagger-initializer.js"

#: Swagger UI's options (https://swagger.io/docs/open-source-tools/swagger-ui/usage/configuration/).
#: ``validatorUrl: null``: no badge that would send the document to an online validator.
UI_OPTIONS: Mapping[str, object] = {
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": True,
    "displayRequestDuration": True,
    "showExtensions": True,
    "showCommonExtensions": True,
    "validatorUrl": None,
    "persistAuthorization": False,
}

INITIALIZER_TEMPLATE = """\
"use strict";
(function () {
  var options = %s;
  options.presets = [SwaggerUIBundle.presets.apis];
  window.ui = SwaggerUIBundle(options);
})();
"""

PAGE_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%(title)s</title>
<link rel="stylesheet" href="%(swagger-ui.css)s">
<link rel="stylesheet" href="%(index.css)s">
<link rel="icon" type="image/png" sizes="32x32" href="%(favicon-32x32.png)s">
<link rel="icon" type="image/png" sizes="16x16" href="%(favicon-16x16.png)s">
</head>
<body>
<div id="swagger-ui"></div>
<script src="%(swagger-ui-bundle.js)s"></script>
<script src="%(swagger-initializer.js)s"></script>
</body>
</html>
"""


@dataclass(frozen=True)
class Asset:
    """One file served under ``/docs``; its ETag is a hash of its bytes."""

    body: bytes
    content_type: str
    cache_control: str
    etag: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "etag", hashlib.sha256(self.body).hexdigest()[:32])


DOCS_KEY: web.AppKey[dict[str, Asset]] = web.AppKey("docs_assets", dict)


def load_docs(openapi_path: Path, spec_url: str = "/openapi.json") -> dict[str, Asset]:
    """The page and its assets, keyed by the path they are served at. Blocking."""
    assets = {
        f"{DOCS_PATH}/{name}": Asset((swagger_ui_path / name).read_bytes(), kind, ASSET_CACHE)
        for name, kind in VENDOR_FILES.items()
    }
    options = {"url": spec_url, **UI_OPTIONS}
    script = INITIALIZER_TEMPLATE % json.dumps(options, indent=2).replace("\n", "\n  ")
    assets[f"{DOCS_PATH}/{INITIALIZER}"] = Asset(script.encode(), "text/javascript", ASSET_CACHE)
    title = json.loads(openapi_path.read_bytes()).get("info", {}).get("title", "HTTP API")
    urls = {path.rsplit("/", 1)[1]: f"{path}?v={a.etag[:12]}" for path, a in assets.items()}
    page = PAGE_TEMPLATE % {"title": html.escape(str(title)), **urls}
    assets[DOCS_PATH] = assets[f"{DOCS_PATH}/"] = Asset(page.encode(), "text/html", PAGE_CACHE)
    return assets


def add_docs_routes(
    app: web.Application, openapi_path: Path, *, spec_url: str = "/openapi.json"
) -> None:
    """Serve the documentation page at ``/docs`` (and ``/docs/``) and its assets below it.

    The files are read once, when the application starts."""

    async def load(app: web.Application) -> None:
        app[DOCS_KEY] = await asyncio.to_thread(load_docs, openapi_path, spec_url)
        log.debug("API docs at %s: Swagger UI from %s", DOCS_PATH, swagger_ui_path)

    app.on_startup.append(load)
    for path in (DOCS_PATH, f"{DOCS_PATH}/", *(f"{DOCS_PATH}/{n}" for n in VENDOR_FILES)):
        app.router.add_get(path, _serve(path))
    app.router.add_get(f"{DOCS_PATH}/{INITIALIZER}", _serve(f"{DOCS_PATH}/{INITIALIZER}"))


def _serve(path: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        asset = request.app[DOCS_KEY][path]
        headers = {"Cache-Control": asset.cache_control, **SECURITY_HEADERS}
        if any(tag.value in (asset.etag, "*") for tag in request.if_none_match or ()):
            response = web.Response(status=304, headers=headers)
        else:
            text = asset.content_type.startswith("text/")
            response = web.Response(
                body=asset.body,
                content_type=asset.content_type,
                charset="utf-8" if text else None,
                headers=headers,
            )
        response.etag = asset.etag
        return response

    return handler
