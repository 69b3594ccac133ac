"""Verify Replicate webhook deliveries (the Standard Webhooks scheme).

A delivery carries ``webhook-id``, ``webhook-timestamp`` (unix seconds) and
``webhook-signature`` (space-separated ``v1,<base64>`` entries). The signed content is
``"{id}.{timestamp}.{raw body}"``, HMAC-SHA256 keyed with the base64-decoded part of the
secret after ``whsec_``. The raw body bytes are signed: verify before parsing JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """The delivery is not authentic or not fresh; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _secret_bytes(secret: str) -> bytes:
    key = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError) as exc:
        # A configuration problem, not a forged delivery: fail loudly.
        raise ValueError("the webhook signing secret is not valid base64") from exc


def sign_webhook(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> None:
    """Raise :class:`WebhookVerificationError` unless the delivery is signed with
    ``secret`` and its timestamp is within ``tolerance`` seconds of ``now``."""
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id:
        raise WebhookVerificationError("missing webhook-id header")
    if not timestamp:
        raise WebhookVerificationError("missing webhook-timestamp header")
    if not signatures:
        raise WebhookVerificationError("missing webhook-signature header")

    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("invalid webhook-timestamp header") from None
    current = time.time() if now is None else now
    if sent_at < current - tolerance:
        raise WebhookVerificationError("webhook timestamp is too old")
    if sent_at > current + tolerance:
        raise WebhookVerificationError("webhook timestamp is in the future")

    expected = sign_webhook(secret, msg_id, timestamp, body).encode("ascii")
    for candidate in signatures.split():
        version, _, _ = candidate.partition(",")
        if version != "v1":
            continue
        if hmac.compare_digest(candidate.encode("ascii", "replace"), expected):
            return
    raise WebhookVerificationError("webhook signature does not match")
