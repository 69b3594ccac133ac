"""Every place where a real client and an official OpenAPI document disagree.

The emulators follow the real client (discord.py, replicate); each entry says why.
An entry matches on service, method, a path regex, the kind of check and a regex of the
validation message, so it silences exactly one known disagreement and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownException:
    service: str
    method: str
    path: str  # regex, matched in full against the path without the API prefix
    kind: str  # "request", "response" or "*"
    message: str  # regex searched in the validation message
    reason: str


EXCEPTIONS: list[KnownException] = [
]


def is_known_exception(service: str, method: str, path: str, kind: str, message: str) -> str | None:
    for exc in EXCEPTIONS:
        if exc.service != service or exc.method not in (method.upper(), "*"):
            continue
        if exc.kind not in (kind, "*") or not re.fullmatch(exc.path, path):
            continue
        if re.search(exc.message, message, re.S):
            return exc.reason
    return None
