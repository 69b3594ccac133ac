"""Verify Replicate webhook deliveries (the Standard Webhooks scheme) with the replicate
client's own verifier, :meth:`replicate.webhook.Webhooks.validate`.

A delivery carries ``webhook-id``, ``webhook-timestamp`` (unix seconds) and
``webhook-signature`` (space-separated ``v1,<base64>`` entries); the raw body bytes are
signed, so verify before parsing JSON. The client's verifier is wrapped because of what
it does with input it does not expect: a malformed timestamp or signature raises plain
``ValueError`` or ``binascii.Error``, one malformed entry refuses the whole header even
when another entry is valid, entries of any version are tried, and a malformed secret is
quoted in its error message. Here every refusal is a
:class:`WebhookVerificationError` with a fixed reason, and no message of the client's
(which could hold the secret) is kept, logged or chained.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping

from replicate.webhook import (
    InvalidSecretKeyError,
    InvalidTimestampError,
    MissingWebhookBodyError,
    Webhooks,
    WebhookSigningSecret,
)

SECRET_PREFIX = "whsec_"
#: Seconds a delivery's timestamp may be off the clock, either way (the scheme's default).
DEFAULT_TOLERANCE = 300
REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class WebhookVerificationError(Exception):
    """The delivery is not authentic or not fresh; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class WebhookSecretError(ValueError):
    """The signing secret itself is malformed: a configuration problem, not a forgery."""


def check_secret(secret: str) -> None:
    """Raise :class:`WebhookSecretError` (which never quotes it) unless ``secret`` is
    ``whsec_`` followed by base64."""
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookSecretError("the webhook signing secret does not start with whsec_")
    try:
        base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSecretError("the webhook signing secret is not valid base64") from None


def _is_v1(entry: str) -> bool:
    """A ``v1,<base64>`` entry: the only kind the client's verifier can check."""
    version, _, signature = entry.partition(",")
    try:
        base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    return version == "v1" and bool(signature)


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Raise :class:`WebhookVerificationError` unless the delivery is signed with
    ``secret`` and its timestamp is within ``tolerance`` seconds of the clock."""
    check_secret(secret)
    lowered = {key.lower(): value for key, value in headers.items()}
    for name in REQUIRED_HEADERS:
        if not lowered.get(name):
            raise WebhookVerificationError(f"missing {name} header")
    try:
        sent_at = int(lowered["webhook-timestamp"])
    except ValueError:
        raise WebhookVerificationError("invalid webhook-timestamp header") from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookVerificationError("webhook body is not UTF-8") from None
    v1 = [entry for entry in lowered["webhook-signature"].split() if _is_v1(entry)]
    if not v1:
        raise WebhookVerificationError("webhook signature does not match")
    lowered["webhook-signature"] = " ".join(v1)
    try:
        Webhooks.validate(
            headers=lowered,
            body=text,
            secret=WebhookSigningSecret(key=secret),
            tolerance=tolerance,
        )
    except InvalidSecretKeyError:
        raise WebhookSecretError("the webhook signing secret is malformed") from None
    except InvalidTimestampError:
        late = sent_at < time.time()
        reason = "webhook timestamp is too old" if late else "webhook timestamp is in the future"
        raise WebhookVerificationError(reason) from None
    except MissingWebhookBodyError:
        raise WebhookVerificationError("missing webhook body") from None
    except ValueError:
        # InvalidSignatureError, and binascii.Error for an entry that is not base64.
        raise WebhookVerificationError("webhook signature does not match") from None
