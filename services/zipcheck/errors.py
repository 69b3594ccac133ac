"""The errors that escape the zip checks (everything else goes into the report)."""

from __future__ import annotations

from services.errors import UserFacingError


class ZipCheckError(UserFacingError):
    """Base error; ``user_message`` is safe to show to a user as is."""


class ZipTooLarge(ZipCheckError):
    """The upload exceeded the size limit while it was being downloaded."""


class ZipUnreadable(ZipCheckError):
    """The file to check could not be opened at all (missing, a directory, no permission)."""
