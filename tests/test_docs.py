"""The documentation page at ``/docs`` over plain HTTP: every asset it names is served by
the bot itself, with the security and caching headers, and without the API token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest

from api.routes.docs import CONTENT_SECURITY_POLICY
from tests.emulators.replicate import ReplicateEmulator
from tests.test_http_api import TOKEN, ApiServer

#: Every URL the page loads, and where it is named.
LINKED = {("link", "href"), ("script", "src"), ("img", "src"), ("iframe", "src")}


class LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.style_attributes = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if (tag, name) in LINKED and value:
                self.urls.append(value)
        if "style" in values or tag == "style":
            self.style_attributes += 1
        self._in_script = tag == "script" and "src" not in values

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


@pytest.fixture
async def base_url(replicate_emu: ReplicateEmulator, tmp_path: Path) -> AsyncIterator[str]:
    (tmp_path / "train").mkdir()
    server = ApiServer(replicate_emu, tmp_path)
    try:
        api = await server.start()
        yield api.base_url
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def assert_secure(headers: Mapping[str, str]) -> None:
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["ETag"] and headers["Cache-Control"]


async def test_every_asset_is_served_by_the_bot_with_security_headers(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    origin = urlsplit(base_url).netloc
    for page_path in ("/docs", "/docs/"):
        async with http.get(base_url + page_path) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert_secure(response.headers)
            assert response.headers["Cache-Control"] == "no-cache"
            page = await response.text()
    parser = LinkCollector()
    parser.feed(page)
    assert parser.inline_scripts == 0 and parser.style_attributes == 0
    assert len(parser.urls) >= 4, parser.urls
    fetched: dict[str, bytes] = {}
    for url in parser.urls:
        absolute = urljoin(base_url + "/docs", url)
        parts = urlsplit(absolute)
        assert (parts.scheme, parts.netloc) == ("http", origin), f"{url} is not on the server"
        async with http.get(absolute) as response:
            assert response.status == 200, url
            assert_secure(response.headers)
            assert "max-age=" in response.headers["Cache-Control"]
            fetched[parts.path] = await response.read()

    # The stylesheets load nothing but inline data, the start-up script only the document.
    for path, body in fetched.items():
        if path.endswith(".css"):
            for ref in re.findall(rb"url\(\s*['\"]?([^'\")\s]+)", body):
                assert ref.startswith(b"data:"), (path, ref[:80])
            assert b"@import" not in body
    initializer = fetched["/docs/swagger-initializer.js"].decode()
    assert re.findall(r'"url": "([^"]*)"', initializer) == ["/openapi.json"]
    assert "http:" not in initializer and "https:" not in initializer
    assert '"validatorUrl": null' in initializer


async def test_the_policy_allows_only_the_bot_itself() -> None:
    directives = dict(
        (name, set(sources))
        for name, *sources in (d.split() for d in CONTENT_SECURITY_POLICY.split("; "))
    )
    assert directives["default-src"] == {"'none'"}
    assert directives["script-src"] == {"'self'"}
    assert directives["connect-src"] == {"'self'"}
    assert directives["style-src"] == {"'self'"}
    assert directives["img-src"] == {"'self'", "data:", "blob:"}
    assert directives["frame-ancestors"] == {"'none'"}
    every_source = set().union(*directives.values())
    assert every_source <= {"'self'", "'none'", "data:", "blob:"}


async def test_assets_are_revalidated_with_their_etag(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    for path in ("/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"):
        async with http.get(base_url + path) as response:
            assert response.status == 200
            etag = response.headers["ETag"]
            size = len(await response.read())
        assert size > 0
        async with http.get(base_url + path, headers={"If-None-Match": etag}) as again:
            assert again.status == 304, path
            assert again.headers["ETag"] == etag
            assert await again.read() == b""
            assert_secure(again.headers)
        weak = {"If-None-Match": f'"other", W/{etag}'}
        async with http.get(base_url + path, headers=weak) as again:
            assert again.status == 304, path
        async with http.get(base_url + path, headers={"If-None-Match": '"other"'}) as changed:
            assert changed.status == 200 and len(await changed.read()) == size


async def test_docs_need_no_token_and_the_api_still_does(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(base_url + "/docs") as response:
        assert response.status == 200
    async with http.get(base_url + "/openapi.json") as response:
        assert response.status == 200
    async with http.post(base_url + "/image/generate", json={"prompt": "a cat"}) as response:
        assert response.status == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(
        base_url + "/image/generate", json={"prompt": "a cat"}, headers=bearer
    ) as response:
        assert response.status == 200


async def test_unknown_docs_files_are_not_served(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    """Only the listed files: not the package's other files, nor anything beside them."""
    for path in (
        "/docs/index.html",
        "/docs/index.j2",
        "/docs/swagger-ui-bundle.js.map",
        "/docs/../api/openapi.json",
        "/docs/%2e%2e/bot.py",
    ):
        async with http.get(base_url + path) as response:
            assert response.status == 404, path
            assert response.content_type == "application/problem+json"
