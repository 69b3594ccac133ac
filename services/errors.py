"""Errors whose message is meant for the person who asked (Discord or HTTP alike).

:class:`UserFacingError` is the one base of every such error: the services' own refusals
below, the Replicate layer's errors (``services.replicate.ReplicateServiceError``) and the
zip checker's (``services.zipcheck.ZipCheckError``). ``except UserFacingError`` catches
them all; catch the narrower classes first where they are answered differently."""

from __future__ import annotations


class UserFacingError(Exception):
    """Invalid input, a refused request or a limit reached: ``user_message`` is shown as is.

    ``str(exc)`` is ``message`` when one is given (more detail, for logs; never shown to
    users), else ``user_message``. ``retry_after`` (seconds) says when trying again may
    work, where that is known."""

    def __init__(
        self, user_message: str, *, retry_after: float | None = None, message: str | None = None
    ) -> None:
        super().__init__(message or user_message)
        self.user_message = user_message
        self.retry_after = retry_after


class LimitReached(UserFacingError):
    """A quota, cooldown or queue limit; ``retry_after`` says when trying again may work."""


class PermissionRefused(UserFacingError):
    """The caller may not do this (role, ownership)."""
