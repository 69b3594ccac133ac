"""One base for every error whose message is for the user: ``except UserFacingError``
catches the services' refusals, the Replicate layer's errors and the zip checker's."""

from __future__ import annotations

import pytest

from services import replicate
from services.errors import LimitReached, PermissionRefused, UserFacingError
from services.replicate import (
    InvalidInputError,
    ModelFailedError,
    RateLimitedError,
    ReplicateServiceError,
    ReplicateUnavailable,
)
from services.zipcheck import ZipCheckError, ZipTooLarge, ZipUnreadable

REPLICATE_ERRORS = [
    obj
    for obj in vars(replicate).values()
    if isinstance(obj, type) and issubclass(obj, ReplicateServiceError)
]


def _instance(cls: type[UserFacingError]) -> UserFacingError:
    if cls is InvalidInputError:
        return cls("width must be at most 1440")
    if cls is ModelFailedError:
        return cls("CUDA out of memory")
    if issubclass(cls, ZipCheckError):
        return cls("The file is larger than the 100 MB limit.")
    if issubclass(cls, ReplicateServiceError):
        return cls("Replicate 500: detail for the logs")
    return cls("Try again later.")


def test_every_replicate_error_is_exported_and_counted() -> None:
    assert len(REPLICATE_ERRORS) == 13


@pytest.mark.parametrize(
    "cls",
    [
        *REPLICATE_ERRORS,
        ZipCheckError,
        ZipTooLarge,
        ZipUnreadable,
        LimitReached,
        PermissionRefused,
        UserFacingError,
    ],
    ids=lambda cls: cls.__name__,
)
def test_except_user_facing_error_catches_it(cls: type[UserFacingError]) -> None:
    with pytest.raises(UserFacingError) as caught:
        raise _instance(cls)
    error = caught.value
    assert type(error) is cls
    assert isinstance(error.user_message, str) and error.user_message
    assert error.retry_after is None or isinstance(error.retry_after, float)


def test_replicate_errors_keep_their_messages_and_attributes() -> None:
    plain = ReplicateUnavailable()
    assert str(plain) == plain.user_message == ReplicateUnavailable.default_user_message
    detailed = ReplicateUnavailable("request timed out (ReadTimeout)")
    assert str(detailed) == "request timed out (ReadTimeout)"
    assert detailed.user_message == "Replicate cannot be reached right now. Try again later."
    limited = RateLimitedError("Replicate 429: slow down", retry_after=2.5)
    assert limited.retry_after == 2.5 and str(limited) == "Replicate 429: slow down"
    assert RateLimitedError().retry_after is None
    refused = InvalidInputError("width must be at most 1440")
    assert refused.detail == "width must be at most 1440"
    assert refused.user_message == "Replicate refused these settings: width must be at most 1440"
    failed = ModelFailedError("CUDA\nout of memory")
    assert failed.error == "CUDA out of memory"
    assert str(failed) == "model failed: CUDA out of memory"
    assert failed.user_message == "The model failed: CUDA out of memory"


def test_zip_errors_keep_their_message() -> None:
    error = ZipTooLarge("The file is larger than the 100 MB limit.")
    assert str(error) == error.user_message == "The file is larger than the 100 MB limit."
    assert isinstance(error, ZipCheckError) and error.retry_after is None
