"""Downloading a prediction's outputs: https links, ``data:`` URLs or the client's
``FileOutput``, each under a size limit, typed by its bytes rather than its name.

Replicate deletes outputs after an hour, so they are fetched as soon as the prediction
succeeds. Outputs are fetched with aiohttp (the process's shared session when given): it
costs a fraction of httpx's CPU per request, which counts when many jobs finish together.
Separate from the API client on purpose: output hosts never see the token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from replicate.helpers import FileOutput

from services.replicate.errors import (
    ModelFailedError,
    OutputExpired,
    OutputTooLarge,
    ReplicateServiceError,
    ReplicateUnavailable,
)
from services.replicate.values import GeneratedImage
from services.sniff import sniff_content_type

DOWNLOAD_CHUNK = 64 * 1024

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}


def _type_from_url(url: str) -> str | None:
    path = unquote(urlsplit(url).path)
    content_type, _ = mimetypes.guess_type(path)
    if content_type is None and path.lower().endswith(".webp"):
        content_type = "image/webp"
    return content_type


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


class OutputDownloader:
    """Fetches outputs with ``session()`` (called per download, like the API transport)
    and a TLS context built on first use, so that it reads ``SSL_CERT_FILE`` as the
    environment is then."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        *,
        max_bytes: int,
        request_timeout: float,
    ) -> None:
        self._session = session
        self.max_bytes = max_bytes
        self._ssl: ssl.SSLContext | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(10.0, request_timeout), sock_read=request_timeout
        )

    async def download_all(self, prediction_id: str, output: Any) -> list[GeneratedImage]:
        """Every image of a succeeded prediction's ``output``, fetched concurrently; the
        first problem is raised as the domain error it is."""
        if output is None:
            raise OutputExpired(f"prediction {prediction_id} succeeded without output")
        items = output if isinstance(output, list) else [output]
        if not items:
            raise ModelFailedError("the model returned no images")
        if len(items) == 1:
            return [await self._fetch(items[0], 0)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._fetch(item, i)) for i, item in enumerate(items)]
        except BaseExceptionGroup as group_error:
            first = _first_leaf(group_error)
            if isinstance(first, ReplicateServiceError):
                raise first from None
            raise
        return [task.result() for task in tasks]

    async def _fetch(self, item: Any, index: int) -> GeneratedImage:
        url = item.url if isinstance(item, FileOutput) else item
        if not isinstance(url, str):
            raise ModelFailedError("the model returned something that is not an image")
        if url.startswith("data:"):
            data, declared = self._decode_data_url(url)
        elif url.startswith("https:"):
            data = await self._download(url)
            declared = _type_from_url(url)
        else:
            # Replicate serves outputs over https only; anything else is refused.
            raise ModelFailedError("the model returned a link that is not https")
        content_type = sniff_content_type(data) or declared or "application/octet-stream"
        ext = _EXTENSIONS.get(content_type) or (mimetypes.guess_extension(content_type) or ".bin")
        return GeneratedImage(
            data=data, content_type=content_type, filename=f"out-{index}.{ext.lstrip('.')}"
        )

    def _decode_data_url(self, url: str) -> tuple[bytes, str | None]:
        header, sep, payload = url.partition(",")
        if not sep:
            raise ModelFailedError("the model returned a malformed data URL")
        media = header[len("data:") :]
        is_base64 = media.endswith(";base64")
        media_type = media.split(";", 1)[0] or None
        if is_base64 and len(payload) * 3 // 4 > self.max_bytes + 3:
            raise OutputTooLarge(f"data URL output exceeds {self.max_bytes} bytes")
        try:
            data = base64.b64decode(payload) if is_base64 else unquote(payload).encode("latin-1")
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise ModelFailedError("the model returned a malformed data URL") from exc
        if len(data) > self.max_bytes:
            raise OutputTooLarge(f"data URL output exceeds {self.max_bytes} bytes")
        return data, media_type

    async def _download(self, url: str) -> bytes:
        limit = self.max_bytes
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        http = self._session()
        try:
            async with http.get(url, ssl=self._ssl, timeout=self._timeout) as response:
                if response.status in (404, 410):
                    raise OutputExpired(f"output gone ({response.status})")
                if response.status >= 400:
                    raise ReplicateUnavailable(f"output download failed ({response.status})")
                declared = response.content_length
                if declared is not None and declared > limit:
                    raise OutputTooLarge(f"output is {declared} bytes, limit {limit}")
                buffer = bytearray()
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                    buffer.extend(chunk)
                    if len(buffer) > limit:
                        raise OutputTooLarge(f"output exceeds {limit} bytes")
                return bytes(buffer)
        except TimeoutError as exc:
            raise ReplicateUnavailable("output download timed out") from exc
        except aiohttp.ClientError as exc:
            raise ReplicateUnavailable(f"output download failed: {type(exc).__name__}") from exc
