"""Standard Webhooks verification, including the scheme's published test vector."""

from __future__ import annotations

import pytest
from replicate.webhook import Webhooks, WebhookSigningSecret

from services.webhooks import WebhookVerificationError, sign_webhook, verify_webhook
from tests.emulators.replicate import ReplicateEmulator

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(**overrides: str) -> dict[str, str]:
    base = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": SIGNATURE,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v != ""}


def test_known_vector():
    assert sign_webhook(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE
    verify_webhook(headers(), BODY, SECRET, now=TIMESTAMP)


def test_known_vector_agrees_with_the_replicate_client():
    Webhooks.validate(
        headers=headers(), body=BODY.decode(), secret=WebhookSigningSecret(key=SECRET)
    )


def test_header_names_are_case_insensitive():
    mixed = {k.title(): v for k, v in headers().items()}
    verify_webhook(mixed, BODY, SECRET, now=TIMESTAMP)


def test_one_valid_signature_among_several_is_enough():
    sig = f"v1,Zm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2Vk v2,whatever {SIGNATURE}"
    verify_webhook(headers(**{"webhook-signature": sig}), BODY, SECRET, now=TIMESTAMP)


@pytest.mark.parametrize(
    ("body", "signature", "secret"),
    [
        (b'{"test": 2432232315}', SIGNATURE, SECRET),  # body changed
        (BODY, "v1,Zm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2Vk", SECRET),  # forged
        (BODY, SIGNATURE.replace("v1,", "v2,"), SECRET),  # unknown scheme
        (BODY, "v1,not base64 !!", SECRET),
        (BODY, SIGNATURE, "whsec_" + "A" * 32),  # another account's secret
    ],
)
def test_forged_deliveries_are_refused(body: bytes, signature: str, secret: str):
    with pytest.raises(WebhookVerificationError, match="signature does not match"):
        verify_webhook(headers(**{"webhook-signature": signature}), body, secret, now=TIMESTAMP)


def test_signed_id_and_timestamp_cannot_be_swapped():
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers(**{"webhook-id": "msg_other"}), BODY, SECRET, now=TIMESTAMP)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(
            headers(**{"webhook-timestamp": str(TIMESTAMP + 1)}), BODY, SECRET, now=TIMESTAMP
        )


@pytest.mark.parametrize(
    ("now", "reason"),
    [(TIMESTAMP + 301, "too old"), (TIMESTAMP - 301, "in the future")],
)
def test_stale_and_future_timestamps(now: int, reason: str):
    with pytest.raises(WebhookVerificationError, match=reason):
        verify_webhook(headers(), BODY, SECRET, now=now)


def test_tolerance_is_inclusive_and_configurable():
    verify_webhook(headers(), BODY, SECRET, now=TIMESTAMP + 300)
    verify_webhook(headers(), BODY, SECRET, now=TIMESTAMP + 3000, tolerance=3600)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers(), BODY, SECRET, now=TIMESTAMP + 11, tolerance=10)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers(missing: str):
    with pytest.raises(WebhookVerificationError, match=f"missing {missing}") as info:
        verify_webhook(headers(**{missing: ""}), BODY, SECRET, now=TIMESTAMP)
    assert info.value.reason == f"missing {missing} header"


def test_bad_timestamp():
    with pytest.raises(WebhookVerificationError, match="invalid webhook-timestamp"):
        verify_webhook(headers(**{"webhook-timestamp": "yesterday"}), BODY, SECRET)


def test_misconfigured_secret_is_loud():
    with pytest.raises(ValueError, match="not valid base64"):
        verify_webhook(headers(), BODY, "whsec_***", now=TIMESTAMP)


def test_emulator_signatures_verify():
    emu = ReplicateEmulator()
    body = b'{"id": "abc", "status": "succeeded"}'
    signed = emu.sign(body)
    verify_webhook(signed, body, emu.webhook_secret)
    signed = emu.sign(body, msg_id=MSG_ID, timestamp=TIMESTAMP)
    assert signed["webhook-id"] == MSG_ID
    verify_webhook(signed, body, emu.webhook_secret, now=TIMESTAMP)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(signed, body + b" ", emu.webhook_secret, now=TIMESTAMP)
