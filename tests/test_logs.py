"""Secrets never reach the log or an answer: masking of every part of every record, and
malformed requests sent as raw bytes to ``python bot.py --http-only``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.logs import MASK, OWN_LOGGERS, SecretMask, configure_logging, log_handler
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import BotProcess
from tests.test_http_api import TOKEN, api_env

DISCORD_SECRET = "discord-token-0123456789.abcdef"


def logger_to(stream: io.StringIO, mask: SecretMask, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [log_handler(mask, stream)]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


@pytest.mark.parametrize("name", ["aiohttp.server", "discord.http", "services.anything"])
def test_every_part_of_a_record_is_masked(name: str) -> None:
    mask = SecretMask(["sekrit-123456", None, ""])
    stream = io.StringIO()
    logger = logger_to(stream, mask, f"test_logs.{name}")
    try:
        raise ValueError("header b'Authorization: Bearer sekrit-123456\\r'")
    except ValueError:
        logger.debug("sent %s", "sekrit-123456", exc_info=True, stack_info=True)
        logger.exception("message sekrit-123456 %r", {"token": "sekrit-123456"})
    written = stream.getvalue()
    assert "sekrit-123456" not in written
    assert written.count(MASK) >= 6, written
    assert "Traceback" in written and "Stack (most recent call last)" in written


def test_secrets_learned_later_are_masked_with_and_without_prefix() -> None:
    mask = SecretMask()
    stream = io.StringIO()
    logger = logger_to(stream, mask, "test_logs.later")
    mask.add("whsec_c2VjcmV0LWtleS1ieXRlcw==")
    logger.info("secret whsec_c2VjcmV0LWtleS1ieXRlcw== key c2VjcmV0LWtleS1ieXRlcw==")
    assert "c2VjcmV0" not in stream.getvalue()
    assert stream.getvalue().count(MASK) == 2


def test_short_values_are_not_masked() -> None:
    mask = SecretMask(["abc"])
    assert mask("abc def") == "abc def"


async def read_answer(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
async def test_malformed_requests_answer_400_and_leak_no_secret(
    replicate_emu: ReplicateEmulator, tmp_path: Path, level: str
) -> None:
    """A token file saved with Windows line endings ends the header in a bare CR: the
    parser refuses it. Neither the answer nor the log may hold the header's bytes."""
    env = api_env(replicate_emu, tmp_path, LOG_LEVEL=level, DISCORD_TOKEN=DISCORD_SECRET)
    proc = BotProcess(env, cwd=tmp_path, args=("--http-only",))
    await proc.start()
    try:
        line = await proc.wait_for_log("web server listening", timeout=20)
        port = int(re.search(r":(\d+)$", line.strip()).group(1))  # type: ignore[union-attr]
        # A delivery, even unsigned, makes the process fetch the webhook signing secret.
        unsigned = await read_answer(
            port,
            b"POST /webhooks/replicate HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        assert unsigned.startswith(b"HTTP/1.1 401"), unsigned
        secrets = [TOKEN, replicate_emu.token, DISCORD_SECRET, replicate_emu.webhook_secret]
        malformed = [
            b"GET /image/train/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\r\n\r\n",
            b"POST /image/generate HTTP/1.1\r\nHost: localhost\r\nX-Token: %s\x00\r\n\r\n",
            b"GET /%s HTTP/1.1 extra\r\nHost: localhost\r\n\r\n",
            b"G\x01T /ping HTTP/1.1\r\nAuthorization: %s\r\n\r\n",
        ]
        for secret in secrets:
            for template in malformed:
                answer = await read_answer(port, template % secret.encode())
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.split(b" ", 2)[1] == b"400", answer
                assert b"content-type: application/problem+json" in head.lower(), head
                problem = json.loads(body)
                assert problem["status"] == 400 and len(body) < 200, body
                assert secret.encode() not in answer
                assert b"Authorization" not in body and b"localhost" not in body
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.output[-3000:]
    finally:
        await proc.kill()
    for secret in secrets:
        assert secret not in proc.output, secret
    assert secret.removeprefix("whsec_") not in proc.output
    refused = proc.output.count("refused a malformed request")
    assert refused == (4 * len(secrets) if level == "DEBUG" else 0), proc.output[-3000:]
    assert "Traceback" not in proc.output
    assert "DEBUG   aiosqlite" not in proc.output  # other libraries stay at INFO


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook)
    own = {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    try:
        yield
    finally:
        root.handlers[:], level, sys.excepthook = saved
        root.setLevel(level)
        for name, own_level in own.items():
            logging.getLogger(name).setLevel(own_level)
        logging.captureWarnings(False)


@pytest.mark.usefixtures("restore_logging")
def test_other_libraries_stay_at_info_unless_log_level_all_says() -> None:
    configure_logging("DEBUG", [])
    assert logging.getLogger("services.store.sqlite").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("bot").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.INFO
    configure_logging("WARNING", [])
    assert logging.getLogger("discord.gateway").getEffectiveLevel() == logging.WARNING
    configure_logging("INFO", [], all_level="DEBUG")
    assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("cogs.generate").getEffectiveLevel() == logging.INFO
