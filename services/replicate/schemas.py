"""The inputs of the models the bot offers, read from Replicate and kept in memory.

:class:`ModelSchemas` answers :meth:`~ModelSchemas.inputs` from a bounded cache (least
recently used out first). An ``owner/name`` entry is read again after ``ttl`` seconds,
since a new version may change what the model takes; an ``owner/name:version`` one never
expires (a version does not change). When a read fails and an older answer is known, the
older answer is kept (and tried again after ``retry_after_failure`` seconds), so an
outage of the models API does not stop generations. Concurrent reads of one model share
one request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.model_inputs import ModelInputs
from services.replicate.errors import ReplicateServiceError
from services.replicate.values import parse_model_ref

log = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[ModelInputs]]


@dataclass
class _Entry:
    value: ModelInputs
    expires: float


class ModelSchemas:
    """What each model takes, fetched with ``fetch`` (``ReplicateService.model_inputs``)
    and cached. One per process; ``service.schemas`` is the service's own."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        ttl: float = 3600.0,
        max_entries: int = 256,
        retry_after_failure: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._fetch = fetch
        self.ttl = ttl
        self.max_entries = max_entries
        self.retry_after_failure = retry_after_failure
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def inputs(self, model_ref: str) -> ModelInputs:
        """What ``model_ref`` (``owner/name`` or ``owner/name:version``) takes.

        Raises :class:`~services.replicate.InvalidModelError` for a malformed reference,
        and the Replicate layer's errors (``ModelNotFoundError``, ``ReplicateUnavailable``,
        ...) when it cannot be read and nothing was known before."""
        key = str(parse_model_ref(model_ref))
        hit = self._fresh(key)
        if hit is not None:
            return hit
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                hit = self._fresh(key)
                if hit is not None:
                    return hit
                return await self._load(key)
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def cached(self, model_ref: str) -> ModelInputs | None:
        """The last answer known for ``model_ref``, however old, without any request (for
        autocompletion, which must answer at once)."""
        try:
            key = str(parse_model_ref(model_ref))
        except ReplicateServiceError:
            return None
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def forget(self, model_ref: str | None = None) -> None:
        """Drop one model's entry (all of them with None): the next call reads it again."""
        if model_ref is None:
            self._entries.clear()
        else:
            self._entries.pop(str(parse_model_ref(model_ref)), None)

    def __len__(self) -> int:
        return len(self._entries)

    def _fresh(self, key: str) -> ModelInputs | None:
        entry = self._entries.get(key)
        if entry is None or self._clock() >= entry.expires:
            return None
        self._entries.move_to_end(key)
        return entry.value

    async def _load(self, key: str) -> ModelInputs:
        try:
            value = await self._fetch(key)
        except ReplicateServiceError as exc:
            entry = self._entries.get(key)
            if entry is None:
                raise
            log.warning("could not read the inputs of %s, keeping the last known: %s", key, exc)
            entry.expires = self._clock() + self.retry_after_failure
            self._entries.move_to_end(key)
            return entry.value
        pinned = ":" in key  # a version never changes
        expires = math.inf if pinned else self._clock() + self.ttl
        self._entries[key] = _Entry(value, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value
