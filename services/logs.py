"""The process's logging: one stderr handler, secrets masked in everything it writes.

Masking happens in the handler, after a record is complete: its message with the
arguments merged, the formatted traceback (``exc_text``) and ``stack_info`` are all
masked, and so is the final line, whatever a formatter adds. That covers every logger
(they all propagate to the root handler) at every level. Secrets learned while running
(the webhook signing secret fetched from Replicate) are added with :func:`add_secret`.

Third-party loggers (discord.py, aiohttp, aiosqlite, SQLAlchemy...) stay at INFO when
``LOG_LEVEL=DEBUG``, so the bot's own debug lines are not drowned in statement logs;
``LOG_LEVEL_ALL`` sets their level too.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType
from typing import TextIO

from services.log_context import ShardField

MASK = "**********"
#: Shorter values are not masked (they would mask ordinary words).
MIN_SECRET_LENGTH = 6
#: Loggers of this project; every other logger is third-party.
OWN_LOGGERS = ("bot", "api", "cogs", "services")
_WEBHOOK_SECRET_PREFIX = "whsec_"
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(shard)s: %(message)s"


class SecretMask:
    """The secrets of this process and the one way to mask them in text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Mask ``secret`` from now on (and, for a ``whsec_`` secret, its key alone)."""
        if not secret:
            return
        forms = {secret.strip(), secret.strip().removeprefix(_WEBHOOK_SECRET_PREFIX)}
        with self._lock:
            known = set(self._secrets)
            known.update(form for form in forms if len(form) >= MIN_SECRET_LENGTH)
            # Longest first, so that a secret containing another is masked whole.
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def clear(self) -> None:
        with self._lock:
            self._secrets = ()

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._secrets)


#: The process's secrets, used by the handler :func:`configure_logging` installs.
SECRETS = SecretMask()


def add_secret(secret: str | None) -> None:
    """Mask ``secret`` in every log line the process writes from now on."""
    SECRETS.add(secret)


class RedactSecrets(logging.Filter):
    """Masks a record in place: message (arguments merged), traceback and stack info.

    The traceback is formatted here into ``exc_text`` (which formatters use as is) so
    that an exception whose text holds a secret never reaches a handler unmasked."""

    def __init__(self, secrets: SecretMask | Iterable[str] = ()) -> None:
        super().__init__()
        self.mask = secrets if isinstance(secrets, SecretMask) else SecretMask(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.mask:
            return True
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _format_exception(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


class MaskingFormatter(logging.Formatter):
    """Masks the finished line too: whatever the format adds passes through the mask."""

    def __init__(self, fmt: str, mask: SecretMask) -> None:
        super().__init__(fmt)
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))


def _format_exception(
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None],
) -> str:
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


def log_handler(mask: SecretMask = SECRETS, stream: TextIO | None = None) -> logging.Handler:
    """The handler every record goes through: to ``stream`` (stderr), masked."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(MaskingFormatter(LOG_FORMAT, mask))
    handler.addFilter(ShardField())
    handler.addFilter(RedactSecrets(mask))
    return handler


def configure_logging(
    level: str, secrets: Iterable[str | None] = (), *, all_level: str | None = None
) -> None:
    """Log to stderr with timestamps, every secret masked.

    ``level`` applies to this project's loggers; third-party loggers get ``all_level``,
    or ``level`` but never below INFO when it is not set."""
    for secret in secrets:
        SECRETS.add(secret)
    root = logging.getLogger()
    root.handlers[:] = [log_handler()]
    numeric = logging.getLevelName(level)
    others = all_level or ("INFO" if numeric < logging.INFO else level)
    root.setLevel(others)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(True)
    sys.excepthook = _masked_excepthook


def _masked_excepthook(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    """An exception nothing caught is printed as usual, masked."""
    sys.stderr.write(SECRETS("".join(traceback.format_exception(kind, value, tb))))
