"""Background tasks that nobody awaits, kept alive and watched.

The event loop keeps only a weak reference to a task: one that nobody holds may be
garbage-collected before it finishes, and an exception in one that nobody awaits is
reported late, if ever. :func:`spawn` holds every task until it is done and logs its
failure at once (as python-discord's bot-core ``scheduling.create_task`` does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """Run ``coro`` in a task of the running loop; keep it until it is done, and log its
    exception, if any. The task is returned, so that its owner may still cancel or await
    it."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)


def running_tasks() -> frozenset[asyncio.Task[Any]]:
    """The tasks :func:`spawn` started that have not finished yet."""
    return frozenset(_running)
