"""The errors of the Replicate layer, all :class:`~services.errors.UserFacingError`.

``str(exc)`` is for logs; ``user_message`` is short, plain and safe to show to an end
user as is. Neither ever contains the API token."""

from __future__ import annotations

from services.errors import UserFacingError

ERROR_TEXT_LIMIT = 300


def trim(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class ReplicateServiceError(UserFacingError):
    """Base of every error the service raises.

    ``str(exc)`` is for logs; ``user_message`` is short, plain and safe to show to a
    Discord user. Neither ever contains the API token."""

    default_user_message = "Something went wrong while talking to Replicate."
    #: For a prediction that ran and then failed or was canceled: the seconds of
    #: hardware time Replicate billed (``metrics.predict_time``), if it said.
    predict_time: float | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        user_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            user_message or self.default_user_message, retry_after=retry_after, message=message
        )


class NSFWError(ReplicateServiceError):
    default_user_message = "The safety filter blocked this image. Try a different prompt."


class InvalidInputError(ReplicateServiceError):
    """Replicate refused the input (422); ``detail`` is Replicate's explanation."""

    default_user_message = "Replicate refused these settings."

    def __init__(self, detail: str, *, user_message: str | None = None) -> None:
        self.detail = detail
        super().__init__(
            f"invalid input: {detail}",
            user_message=user_message or f"Replicate refused these settings: {trim(detail)}",
        )


class InvalidModelError(ReplicateServiceError):
    default_user_message = (
        "That model name is not valid. Use owner/name, or owner/name:version for a trained model."
    )


class NotFoundError(ReplicateServiceError):
    """Replicate answered 404 for a prediction, training or file."""

    default_user_message = "Replicate could not find that."


class ModelNotFoundError(NotFoundError):
    default_user_message = "That model or version does not exist, or this bot cannot use it."


class AuthError(ReplicateServiceError):
    default_user_message = "Replicate refused the bot's API token. Ask the bot owner to check it."


class RateLimitedError(ReplicateServiceError):
    default_user_message = "Replicate is busy right now. Try again in a moment."

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)


class ReplicateUnavailable(ReplicateServiceError):
    default_user_message = "Replicate cannot be reached right now. Try again later."


class ModelFailedError(ReplicateServiceError):
    """The model ran and failed; ``error`` is its error text, trimmed."""

    default_user_message = "The model failed."

    def __init__(self, error: str | None) -> None:
        self.error = trim(error or "unknown error")
        super().__init__(
            f"model failed: {self.error}", user_message=f"The model failed: {self.error}"
        )


class GenerationCanceled(ReplicateServiceError):
    default_user_message = "The generation was canceled."


class OutputTooLarge(ReplicateServiceError):
    default_user_message = "The result is too large to download."


class OutputExpired(ReplicateServiceError):
    """The prediction succeeded but its output was already deleted by Replicate."""

    default_user_message = "The result expired before it could be downloaded."
