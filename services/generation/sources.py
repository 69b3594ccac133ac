"""The input images of jobs: checked before a job is admitted, turned into what
Replicate reads when the job runs, in whichever process runs it.

A generated image is sent as the URL of its parent prediction's output while Replicate
keeps it (an hour after the prediction; :data:`OUTPUT_FRESH` leaves a margin for the new
prediction to start). Past that, the image is fetched again from where the bot posted it
(the result message in Discord, with a fresh link found by :attr:`ImageSources.fresh_link`,
which the Discord front end provides), checked, and sent inline or through Replicate's
Files API. A user's picture is checked before admission; the process that admitted the
job keeps it in memory for the run, and any other process fetches it again from its link.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import aiohttp

from services.errors import UserFacingError
from services.generation.requests import ImageSource, sources_of
from services.input_images import InputImage, InputImageError, check_input_image
from services.replicate import ReplicateService
from services.settings import Settings
from services.store import Generation, Store

log = logging.getLogger(__name__)

#: A parent's output URLs are used for this long after it finished (Replicate keeps
#: them an hour).
OUTPUT_FRESH: Final = timedelta(minutes=45)
FETCH_TIMEOUT: Final = 30.0
GONE: Final = (
    "The image to work on is no longer available (its message may have been deleted). "
    "Send it again as an attachment."
)

FreshLink = Callable[[int, int, int | None, int], Awaitable[str | None]]
"""``(channel_id, message_id, attachment_id, index) -> link``: a fresh link to an image
attachment of a message (the one with ``attachment_id``, else the ``index``-th image), or
None if it is gone."""


class InputImageGone(UserFacingError):
    """A job's input image could not be found or read any more."""


class ImageSources:
    def __init__(
        self,
        settings: Settings,
        replicate: ReplicateService,
        store: Store,
        http: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.settings = settings
        self.replicate = replicate
        self.store = store
        self._http = http
        #: Set by the Discord front end: finds a fresh link to a posted image.
        self.fresh_link: FreshLink | None = None
        self._held: dict[str, tuple[InputImage, ...]] = {}

    @property
    def max_bytes(self) -> int:
        return self.settings.max_input_image_mb * 1024 * 1024

    async def check(self, data: bytes) -> InputImage:
        """Check an input image (type, size, decoding, pixels); raises
        :class:`~services.input_images.InputImageError` with a plain message."""
        return await asyncio.to_thread(check_input_image, data, max_bytes=self.max_bytes)

    async def fetch_checked(self, url: str) -> InputImage:
        """Download an image (at most the input size limit) and check it."""
        return await self.check(await self.fetch(url))

    async def fetch(self, url: str) -> bytes:
        limit = self.max_bytes
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        try:
            async with self._http().get(url, timeout=timeout) as response:
                if response.status >= 400:
                    raise InputImageGone(GONE, message=f"fetching {url[:80]}: {response.status}")
                if (response.content_length or 0) > limit:
                    raise InputImageError(
                        "too_large", f"The image is too large (at most {limit >> 20} MB)."
                    )
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > limit:
                        raise InputImageError(
                            "too_large", f"The image is too large (at most {limit >> 20} MB)."
                        )
                return bytes(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise InputImageGone(GONE, message=f"fetching an input image: {exc!r}") from exc

    def hold(self, gen_id: str, images: tuple[InputImage, ...]) -> None:
        """Keep a job's checked images for its run in this process."""
        if images:
            self._held[gen_id] = images

    def drop(self, gen_id: str) -> None:
        self._held.pop(gen_id, None)

    async def values(self, generation: Generation) -> list[str]:
        """What to send for each of the job's input images: a link Replicate can read,
        or the image itself (inline or uploaded). Raises :class:`InputImageGone` or
        :class:`~services.input_images.InputImageError` when one cannot be had."""
        held = self._held.pop(generation.id, ())
        values: list[str] = []
        for index, source in enumerate(sources_of(generation.params)):
            if index < len(held):
                values.append(await self._send(held[index]))
            else:
                values.append(await self._resolve(source))
        return values

    async def _send(self, image: InputImage) -> str:
        return await self.replicate.file_input(
            image.data, content_type=image.content_type, filename=image.filename
        )

    async def _resolve(self, source: ImageSource) -> str:
        channel_id, message_id = source.channel_id, source.message_id
        link = source.url
        if source.generation is not None:
            parent = await self.store.get_generation(source.generation)
            if parent is None:
                raise InputImageGone(GONE, message=f"generation {source.generation} is gone")
            fresh = fresh_output(parent, source.index)
            if fresh is not None:
                return fresh
            channel_id, message_id, link = parent.channel_id, parent.result_message_id, None
        if link is not None:
            try:
                return await self._send(await self.fetch_checked(link))
            except InputImageGone:
                log.info("the link to an input image failed; looking for a fresh one")
        if self.fresh_link is not None and channel_id and message_id:
            link = await self.fresh_link(channel_id, message_id, source.attachment_id, source.index)
            if link is not None:
                return await self._send(await self.fetch_checked(link))
        raise InputImageGone(GONE, message=f"no way to read input image {source}")


def fresh_output(parent: Generation, index: int) -> str | None:
    """The URL of the parent's ``index``-th output while Replicate surely keeps it."""
    urls = parent.params.get("outputs") or []
    finished = parent.finished_at
    if not isinstance(urls, list) or not 0 <= index < len(urls) or finished is None:
        return None
    if datetime.now(UTC) - finished > OUTPUT_FRESH:
        return None
    url = urls[index]
    return url if isinstance(url, str) and url.startswith("https://") else None
