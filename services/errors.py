"""Errors whose message is meant for the person who asked (Discord or HTTP alike)."""

from __future__ import annotations


class UserFacingError(Exception):
    """Invalid input, a refused request or a limit reached: ``user_message`` is shown as is."""

    def __init__(self, user_message: str, *, retry_after: float | None = None) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.retry_after = retry_after


class LimitReached(UserFacingError):
    """A quota, cooldown or queue limit; ``retry_after`` says when trying again may work."""


class PermissionRefused(UserFacingError):
    """The caller may not do this (role, ownership)."""
