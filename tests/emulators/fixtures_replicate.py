"""Pytest fixtures for the Replicate emulator.

``replicate_ca_file`` puts a trustme CA in ``SSL_CERT_FILE`` for the whole test process
(httpx reads it when a transport is created), so the real client downloads emulated
outputs over verified TLS. Pass the same path to subprocesses that must trust it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from services.replicate import ReplicateService
from tests.emulators.replicate import ReplicateEmulator, WebhookReceiver


@pytest.fixture(scope="session")
def replicate_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def replicate_ca_file(
    replicate_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A PEM bundle trusting the emulator's CA, set as ``SSL_CERT_FILE``.

    A bundle already named by ``SSL_CERT_FILE`` (another emulator's CA) is kept in the
    new one, so fixtures that each add their own CA do not undo each other."""
    path = tmp_path_factory.mktemp("replicate-ca") / "ca.pem"
    previous = os.environ.get("SSL_CERT_FILE")
    pem = replicate_ca.cert_pem.bytes()
    if previous and Path(previous).is_file():
        pem = Path(previous).read_bytes().rstrip(b"\n") + b"\n" + pem
    path.write_bytes(pem)
    os.environ["SSL_CERT_FILE"] = str(path)
    yield path
    if os.environ.get("SSL_CERT_FILE") == str(path):
        if previous is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = previous


@pytest.fixture
async def replicate_emu(
    replicate_ca: trustme.CA, replicate_ca_file: Path
) -> AsyncIterator[ReplicateEmulator]:
    """A started emulator; a spec violation or an emulator crash fails the test at teardown."""
    emu = ReplicateEmulator(replicate_ca)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.close()
    assert not emu.internal_errors, f"emulator errors: {emu.internal_errors}"
    emu.checker.assert_clean()


@pytest.fixture
async def replicate_service(replicate_emu: ReplicateEmulator) -> AsyncIterator[ReplicateService]:
    service = ReplicateService(
        replicate_emu.token,
        base_url=replicate_emu.base_url,
        poll_interval=0.02,
        request_timeout=5.0,
    )
    try:
        yield service
    finally:
        await service.aclose()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """An HTTP endpoint that records the emulator's webhook deliveries."""
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.close()
