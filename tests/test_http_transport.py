"""The httpx transport over aiohttp, against a real local aiohttp server: what the
official replicate client relies on (bodies, encodings, redirects, errors, timeouts)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import socket
import threading
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp import web

from services.http_transport import AiohttpTransport


class Server:
    def __init__(self) -> None:
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        self.release = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Server:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/echo", self._echo)
        app.router.add_get("/gzip", self._gzip)
        app.router.add_get("/moved", self._moved)
        app.router.add_get("/hang", self._hang)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append((dict(request.headers), body))
        return web.json_response({"length": len(body)}, status=201)

    async def _gzip(self, request: web.Request) -> web.Response:
        data = gzip.compress(json.dumps({"status": "succeeded"}).encode())
        return web.Response(
            body=data, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def _moved(self, request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/gzip"})

    async def _hang(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(text="late")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = await Server().start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(lambda: session)
        async with httpx.AsyncClient(transport=transport, timeout=5) as c:
            yield c


async def test_json_in_and_out_with_headers(server: Server, client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{server.url}/echo", json={"input": {"prompt": "a cat"}}, headers={"X-Token": "t"}
    )
    headers, body = server.bodies[-1]
    assert response.status_code == 201 and response.json() == {"length": len(body)}
    assert json.loads(body) == {"input": {"prompt": "a cat"}}
    assert headers["Content-Length"] == str(len(body))
    assert headers["X-Token"] == "t" and headers["Content-Type"] == "application/json"


async def test_a_streamed_body_arrives_whole(server: Server, client: httpx.AsyncClient) -> None:
    chunks = [bytes([i]) * 65536 for i in range(8)]

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    response = await client.post(f"{server.url}/echo", content=stream())
    assert response.json() == {"length": 8 * 65536}
    assert server.bodies[-1][1] == b"".join(chunks)


class ThreadedFile(io.BytesIO):
    """A file that notes the thread of every read and the largest read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.threads: set[int] = set()
        self.largest = 0

    def read(self, size: int | None = -1) -> bytes:
        self.threads.add(threading.get_ident())
        self.largest = max(self.largest, size if size is not None and size >= 0 else 1 << 62)
        return super().read(size)


async def test_a_file_upload_is_read_in_pieces_off_the_event_loop(
    server: Server, client: httpx.AsyncClient
) -> None:
    """A training zip is streamed from disk as it is sent: never read whole, never read
    by the event loop's thread."""
    data = bytes(range(256)) * 8192  # 2 MB
    upload = ThreadedFile(data)
    response = await client.post(
        f"{server.url}/echo", files={"content": ("images.zip", upload, "application/zip")}
    )
    assert response.status_code == 201
    assert data in server.bodies[-1][1]
    assert upload.threads and threading.get_ident() not in upload.threads
    assert upload.largest <= 1024 * 1024


async def test_gzip_is_decoded_once(server: Server, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{server.url}/gzip")
    assert response.json() == {"status": "succeeded"}
    assert "content-encoding" not in response.headers


async def test_redirects_are_left_to_httpx(server: Server, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{server.url}/moved")
    assert response.status_code == 307 and response.headers["Location"] == "/gzip"
    followed = await client.get(f"{server.url}/moved", follow_redirects=True)
    assert followed.json() == {"status": "succeeded"}


async def test_a_refused_connection_is_a_connect_error(client: httpx.AsyncClient) -> None:
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{closed.getsockname()[1]}/")


async def test_a_silent_server_is_a_read_timeout(server: Server, client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.get(f"{server.url}/hang", timeout=httpx.Timeout(5, read=0.2))
