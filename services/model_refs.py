"""How Replicate names models and owners, as regular expressions.

Kept apart from :mod:`services.replicate` so that the settings can validate model names
without importing the Replicate client."""

from __future__ import annotations

import re

__all__ = ["FULL_VERSION", "MODEL_REF", "OWNER"]

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MODEL_REF = re.compile(rf"^(?P<owner>{_NAME})/(?P<name>{_NAME})(?::(?P<version>[0-9a-f]{{64}}))?$")
"""``owner/name`` or ``owner/name:<64 hex version>``, as Replicate names models."""
OWNER = re.compile(rf"^{_NAME}$")
"""An account or organisation name."""
FULL_VERSION = re.compile(rf"^{_NAME}/{_NAME}:[0-9a-f]{{64}}$")
"""``owner/name:<64 hex version>``, a trained model's version."""
