"""A PostgreSQL server of a test's own, for tests that stop or restart the database.

Made like ``scripts/with-postgres`` makes its server (Debian's binaries, ``initdb`` and
``pg_ctl`` in a temporary folder, 127.0.0.1, trust authentication); as root, the server
runs as the ``postgres`` user, as it refuses to run as root.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import tempfile
from pathlib import Path


def server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A server in a new folder under the system's temporary folder (the ``postgres``
    user must be able to reach it, which a test's own ``tmp_path`` does not allow)."""

    def __init__(self) -> None:
        bindir = server_binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.folder / "pgdata"
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    async def _run(self, *args: str) -> None:
        # Errors go to a file, not a pipe: the server pg_ctl starts may keep a pipe open
        # after pg_ctl has exited (uvloop then waits for its end).
        with tempfile.TemporaryFile() as err:
            proc = await asyncio.create_subprocess_exec(
                *self._as_owner(), *args, stdout=asyncio.subprocess.DEVNULL, stderr=err
            )
            await proc.wait()
            if proc.returncode != 0:
                err.seek(0)
                text = err.read().decode(errors="replace")
                raise RuntimeError(f"{Path(args[0]).name} failed: {text}")

    async def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        await self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync",
        )  # fmt: skip
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        await self._pg_ctl("start")

    async def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        await self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"),
            "-w", "-t", "30", "-o", options, *extra, action,
        )  # fmt: skip

    async def restart(self) -> None:
        """Stop at once (clients are cut off), then start again on the same port."""
        await self._pg_ctl("restart", "-m", "fast")

    async def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                await self._pg_ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
