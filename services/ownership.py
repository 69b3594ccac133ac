"""Which process runs which job: this process's identity, its leases, and takeovers.

Every job a process admits or takes over is leased to it (``lease_owner``) until
``lease_expires_at``; :class:`LeaseKeeper` renews those leases while the process lives.
When a process dies its leases run out, and the keeper of any live process takes the jobs
over and hands them to whoever registered for them (:meth:`LeaseKeeper.on_adopt`), which
finishes them: the store decides who wins, so each job is taken over exactly once.

A process that was killed on this machine is noticed at once rather than after its leases
expire: processes register in the store with their pid, and a pid that no longer runs on
this machine (same boot, same pid namespace) has its leases ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.store import Generation, Store, Training
from services.tasks import spawn

log = logging.getLogger(__name__)

Adopter = Callable[[Generation], Awaitable[None]]
TrainingAdopter = Callable[[Training], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """This process as the store knows it."""

    id: str
    host_key: str
    pid: int

    @classmethod
    def current(cls) -> ProcessIdentity:
        host = socket.gethostname()
        pid = os.getpid()
        return cls(f"{host[:40]}:{pid}:{secrets.token_hex(4)}", _host_key(host), pid)


def _host_key(host: str) -> str:
    """The same for two processes only if they see the same pids: same host name, same
    boot, same pid namespace (two containers on one host differ)."""
    parts = [host]
    for path in ("/proc/sys/kernel/random/boot_id",):
        with contextlib.suppress(OSError):
            parts.append(Path(path).read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeaseKeeper:
    """Renews this process's leases and takes over the jobs of processes that are gone."""

    def __init__(
        self,
        store: Store,
        identity: ProcessIdentity,
        *,
        lease_seconds: float,
        role: str,
        sources: Sequence[str],
    ) -> None:
        self.store = store
        self.identity = identity
        self.lease = timedelta(seconds=lease_seconds)
        self.role = role
        #: Which jobs this process can finish: a process without Discord cannot post
        #: the images of a Discord job, so it leaves them to one that can.
        self.sources = tuple(sources)
        self._adopters: list[Adopter] = []
        self._training_adopters: list[TrainingAdopter] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def owner(self) -> str:
        return self.identity.id

    def lease_until(self, now: datetime | None = None) -> datetime:
        return (now or datetime.now(UTC)) + self.lease

    def on_adopt(self, adopter: Adopter) -> None:
        """Call ``adopter(job)`` for each generation this process takes over."""
        self._adopters.append(adopter)

    def on_abandoned_training(self, adopter: TrainingAdopter) -> None:
        """Call ``adopter(training)`` for each training whose starting process died."""
        self._training_adopters.append(adopter)

    async def register(self) -> None:
        await self.store.register_process(
            self.identity.id,
            self.identity.host_key,
            self.identity.pid,
            self.role,
            datetime.now(UTC),
        )

    def start(self) -> None:
        self._task = spawn(self._run(), name="lease-keeper")

    def scan_soon(self) -> None:
        self._wake.set()

    async def stop(self, *, release: bool) -> None:
        """Stop renewing; with ``release``, hand every lease back at once so that another
        process takes the jobs over without waiting for them to expire."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            if release:
                released = await self.store.release_leases(self.owner, datetime.now(UTC))
                if released:
                    log.info("handed %d job(s) back", released)
            await self.store.forget_processes([self.owner])
        except Exception as exc:
            # Nothing is lost: the leases expire on their own.
            log.warning("could not hand the leases back: %s", exc)

    @property
    def interval(self) -> float:
        """Renew well before a lease runs out, and look for orphans as often."""
        return max(0.2, min(self.lease.total_seconds() / 3, 10.0))

    async def _run(self) -> None:
        while True:
            try:
                await self.renew()
                await self.scan()
            except Exception:
                log.exception("lease keeping failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)

    async def renew(self) -> None:
        now = datetime.now(UTC)
        until = self.lease_until(now)
        await self.store.renew_leases(self.owner, until)
        await self.store.renew_training_leases(self.owner, until)
        await self.store.heartbeat_process(self.owner, now)

    async def scan(self) -> int:
        """Take over what processes that are gone left; returns how many jobs."""
        now = datetime.now(UTC)
        await self._end_leases_of_dead_neighbours(now)
        taken = await self.store.take_over_generations(
            self.owner, now, self.lease_until(now), sources=self.sources
        )
        for job in taken:
            log.info("took over generation %s (%s) left by %s", job.id, job.status, job.lease_owner)
            for adopter in self._adopters:
                spawn(adopter(job), name=f"adopt-{job.id}")
        for training in await self.store.abandoned_trainings(now, ABANDONED_TRAINING):
            log.info("training %s was abandoned while starting", training.id)
            for adopter in self._training_adopters:
                spawn(adopter(training), name=f"abandoned-training-{training.id}")
        return len(taken)

    async def _end_leases_of_dead_neighbours(self, now: datetime) -> None:
        neighbours = await self.store.processes_on_host(self.identity.host_key)
        dead = [p.id for p in neighbours if p.id != self.owner and not pid_alive(p.pid)]
        if dead:
            ended = await self.store.expire_leases_of(dead, now)
            await self.store.forget_processes(dead)
            if ended:
                log.info("%d job(s) of %d stopped process(es) are free", ended, len(dead))
        await self.store.forget_silent_processes(now - 10 * self.lease - timedelta(hours=1))


ABANDONED_TRAINING = (
    "The bot stopped before this training reached Replicate; nothing was charged. "
    "Please start it again."
)
