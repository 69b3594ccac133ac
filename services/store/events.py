"""Change notices between the processes that share one store.

A notice is a short topic string ("queue", "gen:<id>", "training:<id>", ...): it only says
that something changed, and whoever cares reads the store. Within one process notices are
delivered at once; on PostgreSQL they also travel to every other process with
``NOTIFY``/``LISTEN``. Delivery is best effort (a connection can drop), so receivers also
read the store on a timer, and after a reconnect every subscriber gets ``"*"``: anything
may have changed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger(__name__)

CHANNEL: Final = "imagebot_events"
#: Any change at all (sent after a reconnect).
EVERYTHING: Final = "*"
RECONNECT_MAX_DELAY: Final = 10.0

Subscriber = Callable[[str], None]


class StoreEvents:
    """Notices within this process (SQLite: one process uses the store)."""

    #: Whether notices reach the other processes using the store (else a process that
    #: caches what the store says would not hear that it changed elsewhere).
    shared: bool = False

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(topic)`` on every notice; returns the function that stops it.
        Callbacks run on the event loop and must not block."""
        self._subscribers.append(callback)
        return lambda: self._unsubscribe(callback)

    def _unsubscribe(self, callback: Subscriber) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    def publish(self, topic: str) -> None:
        """Tell every subscriber, here and in other processes, that ``topic`` changed."""
        self._deliver(topic)

    def _deliver(self, topic: str) -> None:
        for callback in list(self._subscribers):
            try:
                callback(topic)
            except Exception:
                log.exception("store event subscriber failed on %s", topic)

    async def start(self) -> None:
        return None

    async def flush(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Wait until the notices published so far have left this process."""
        return None

    async def close(self) -> None:
        return None


class PostgresEvents(StoreEvents):
    """Notices shared through PostgreSQL's ``NOTIFY`` on one channel."""

    shared = True

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._dsn = dsn
        self._sender = secrets.token_hex(6)
        self._conn: Any = None
        self._pending: list[str] = []
        self._flush_needed = asyncio.Event()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: Set while every notice published has been sent.
        self._idle = asyncio.Event()
        self._idle.set()

    def publish(self, topic: str) -> None:
        self._deliver(topic)
        if topic not in self._pending:
            self._pending.append(topic)
        self._idle.clear()
        self._flush_needed.set()

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._run(), name="store-events")

    async def flush(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Best effort: gives up after ``timeout`` (the connection may be down)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            # Send what is pending before leaving, if the connection allows.
            if self._pending and self._conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._send(), timeout=2)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _connect(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._dsn)
        await conn.add_listener(CHANNEL, self._on_notify)
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        self._connected.set()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._connected.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)

    def _on_terminated(self, _conn: Any) -> None:
        self._connected.clear()
        self._flush_needed.set()  # wakes the loop, which reconnects

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        sender, _, topic = payload.partition("\n")
        if sender != self._sender and topic:
            self._deliver(topic)

    async def _run(self) -> None:
        delay = 0.1
        while not self._closing:
            try:
                if self._conn is None or self._conn.is_closed():
                    await self._disconnect()
                    await self._connect()
                    log.info("store events reconnected")
                    self._deliver(EVERYTHING)
                    delay = 0.1
                await self._flush_needed.wait()
                self._flush_needed.clear()
                await self._send()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("store events: %s; retrying in %.1f s", exc, delay)
                await self._disconnect()
                self._flush_needed.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _send(self) -> None:
        topics, self._pending = self._pending, []
        if not topics or self._conn is None:
            return
        try:
            await self._conn.execute(
                "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                CHANNEL,
                [f"{self._sender}\n{topic}" for topic in topics],
            )
        except BaseException:
            self._pending[:0] = topics
            raise
        if not self._pending:
            self._idle.set()
