"""Standard Webhooks verification, including the scheme's published test vector.

Verification checks the timestamp against the clock, so deliveries are signed here with
fresh timestamps; the published vector (from 2021) is checked with a tolerance wide
enough to reach back to it."""

from __future__ import annotations

import time

import pytest
from replicate.webhook import Webhooks, WebhookSigningSecret

from services.webhooks import WebhookSecretError, WebhookVerificationError, verify_webhook
from tests.emulators.replicate import ReplicateEmulator
from tests.emulators.replicate.webhooks import sign_webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
#: Wide enough to accept the published vector's timestamp.
SINCE_THE_VECTOR = 10**10


def headers(**overrides: str) -> dict[str, str]:
    base = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": SIGNATURE,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v != ""}


def fresh(body: bytes = BODY, *, age: int = 0, secret: str = SECRET, **overrides: str):
    """Headers of a delivery of ``body`` signed ``age`` seconds ago (negative: ahead)."""
    timestamp = int(time.time()) - age
    signed = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(secret, MSG_ID, timestamp, body),
    }
    signed.update(overrides)
    return {k: v for k, v in signed.items() if v != ""}


def test_known_vector():
    assert sign_webhook(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE
    verify_webhook(headers(), BODY, SECRET, tolerance=SINCE_THE_VECTOR)


def test_known_vector_agrees_with_the_replicate_client():
    Webhooks.validate(
        headers=headers(), body=BODY.decode(), secret=WebhookSigningSecret(key=SECRET)
    )


def test_a_fresh_delivery_verifies():
    verify_webhook(fresh(), BODY, SECRET)


def test_header_names_are_case_insensitive():
    mixed = {k.title(): v for k, v in fresh().items()}
    verify_webhook(mixed, BODY, SECRET)


def test_one_valid_signature_among_several_is_enough():
    valid = fresh()
    sig = (
        "v1,Zm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2Vk v2,whatever garbage v1,!!! "
        + valid["webhook-signature"]
    )
    verify_webhook({**valid, "webhook-signature": sig}, BODY, SECRET)


@pytest.mark.parametrize(
    ("body", "signature", "secret"),
    [
        (b'{"test": 2432232315}', None, SECRET),  # body changed
        (BODY, "v1,Zm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2Vk", SECRET),  # forged
        (BODY, "v2", SECRET),  # unknown scheme
        (BODY, "v1,not base64 !!", SECRET),
        (BODY, "v1,Zm9yZ2Vk=", SECRET),  # bad padding
        (BODY, "v1", SECRET),
        (BODY, ",,,", SECRET),
        (BODY, None, "whsec_" + "A" * 32),  # another account's secret
        (b"\xff\xfe not utf-8", None, SECRET),
    ],
)
def test_forged_deliveries_are_refused(body: bytes, signature: str | None, secret: str):
    signed = fresh()  # signed over BODY with SECRET
    if signature == "v2":
        signature = signed["webhook-signature"].replace("v1,", "v2,")
    if signature is not None:
        signed["webhook-signature"] = signature
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(signed, body, secret)
    assert info.value.reason in ("webhook signature does not match", "webhook body is not UTF-8")


def test_signed_id_and_timestamp_cannot_be_swapped():
    signed = fresh()
    with pytest.raises(WebhookVerificationError, match="signature does not match"):
        verify_webhook({**signed, "webhook-id": "msg_other"}, BODY, SECRET)
    later = str(int(signed["webhook-timestamp"]) + 1)
    with pytest.raises(WebhookVerificationError, match="signature does not match"):
        verify_webhook({**signed, "webhook-timestamp": later}, BODY, SECRET)


@pytest.mark.parametrize(("age", "reason"), [(310, "too old"), (-310, "in the future")])
def test_stale_and_future_timestamps(age: int, reason: str):
    with pytest.raises(WebhookVerificationError, match=reason):
        verify_webhook(fresh(age=age), BODY, SECRET)


def test_tolerance_is_configurable():
    verify_webhook(fresh(age=290), BODY, SECRET)
    verify_webhook(fresh(age=3000), BODY, SECRET, tolerance=3600)
    verify_webhook(fresh(age=-3000), BODY, SECRET, tolerance=3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(fresh(age=30), BODY, SECRET, tolerance=10)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers(missing: str):
    with pytest.raises(WebhookVerificationError, match=f"missing {missing}") as info:
        verify_webhook(fresh(**{missing: ""}), BODY, SECRET)
    assert info.value.reason == f"missing {missing} header"


def test_an_empty_body_is_refused():
    with pytest.raises(WebhookVerificationError, match="missing webhook body"):
        verify_webhook(fresh(b""), b"", SECRET)


@pytest.mark.parametrize("timestamp", ["yesterday", "1.5", "9" * 5000, "nan", "-"])
def test_bad_timestamp(timestamp: str):
    with pytest.raises(WebhookVerificationError, match="invalid webhook-timestamp"):
        verify_webhook(fresh(**{"webhook-timestamp": timestamp}), BODY, SECRET)


@pytest.mark.parametrize("secret", ["whsec_***", "whsec_abc_def", "MfKQ9r8GKYqrTwjUPD8ILPZIo2La"])
def test_misconfigured_secret_is_loud_and_never_quoted(secret: str):
    with pytest.raises(WebhookSecretError) as info:
        verify_webhook(fresh(), BODY, secret)
    assert isinstance(info.value, ValueError)
    assert secret.removeprefix("whsec_") not in str(info.value)
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_emulator_signatures_verify():
    emu = ReplicateEmulator()
    body = b'{"id": "abc", "status": "succeeded"}'
    signed = emu.sign(body)
    verify_webhook(signed, body, emu.webhook_secret)
    signed = emu.sign(body, msg_id=MSG_ID, timestamp=TIMESTAMP)
    assert signed["webhook-id"] == MSG_ID
    verify_webhook(signed, body, emu.webhook_secret, tolerance=SINCE_THE_VECTOR)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(signed, body + b" ", emu.webhook_secret, tolerance=SINCE_THE_VECTOR)
