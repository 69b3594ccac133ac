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


EXCEPTIONS: list[KnownException] = []


# Replicate (replicate 1.0.7 client; document as served at api.replicate.com/openapi.json).
EXCEPTIONS.extend(
    [
        KnownException(
            service="replicate",
            method="*",
            path=r"/v1/.+",
            kind="response",
            message=r"\AResponseNotFound: Unknown response http status: [45]\d\d\Z",
            reason=(
                "the document lists no error answers for most operations, but the real API "
                "answers 401/403/404/409/422/429/5xx with an application/problem+json "
                "{title, detail, status}, which the client turns into ReplicateError"
            ),
        ),
        KnownException(
            service="replicate",
            method="*",
            path=r"/v1/(predictions(/[^/]+(/cancel)?)?|models/[^/]+/[^/]+/predictions)",
            kind="response",
            message=(
                r"\AInvalidData: 'hidden' is valid under each of .* "
                r"at \[('results', \d+, )?'version'\]\Z"
            ),
            reason=(
                "prediction.version is a oneOf of {type: string} and {enum: [hidden]}; "
                "'hidden', which the document itself says official models return, matches "
                "both branches so oneOf rejects it (the document means anyOf); the client "
                "only needs a string"
            ),
        ),
        KnownException(
            service="replicate",
            method="POST",
            path=r"/v1/files",
            kind="request",
            message=(
                r"\AInvalidRequestBody: b(['\"]).*\1 is not of type 'string' at \['content'\]\Z"
            ),
            reason=(
                "the `content` part is `type: string, format: binary` (the OpenAPI 3.0 way; "
                "3.1 says contentMediaType), and openapi-core hands a multipart file part to "
                "the 3.1 validator as bytes, which never is a string; the client sends the "
                "file part exactly as the document describes"
            ),
        ),
    ]
)


# Discord (discord.py 2.7.1; github discord/discord-api-spec specs/openapi.json).
EXCEPTIONS.extend(
    [
        KnownException(
            service="discord",
            method="*",
            path=r"/(webhooks/\d+/[^/]+(/messages/[^/]+)?|channels/\d+/messages(/\d+)?"
            r"|interactions/\d+/[^/]+/callback)",
            kind="request",
            message=r"\AInvalidRequestBody: \d+ is not of type 'string' "
            r"at \[('data', )?'attachments', \d+, 'id'\]\Z",
            reason=(
                "discord.py sends attachment ids as JSON integers (the files[n] index that "
                "describes a new upload, the snowflake of an attachment kept on edit); the "
                "document types every attachment id as a snowflake string; Discord accepts both"
            ),
        ),
        KnownException(
            service="discord",
            method="*",
            path=r"/(webhooks/\d+/[^/]+(/messages/[^/]+)?|channels/\d+/messages(/\d+)?"
            r"|interactions/\d+/[^/]+/callback)",
            kind="request",
            message=r"\AInvalidRequestBody: \d+ is not of type 'string' "
            r"at \[('data', )?'allowed_mentions', '(users|roles)', \d+\]\Z",
            reason=(
                "discord.py's AllowedMentions.to_dict() lists user and role ids as JSON "
                "integers, the document types them as snowflake strings; Discord accepts both"
            ),
        ),
        KnownException(
            service="discord",
            method="POST",
            path=r"/channels/\d+/messages",
            kind="request",
            message=r"\AInvalidRequestBody: \d+ is not of type 'string' "
            r"at \['message_reference', '(message|channel|guild)_id'\]\Z",
            reason=(
                "discord.py's Message.to_reference() sends message_id/channel_id/guild_id as "
                "JSON integers, the document types them as snowflake strings; Discord "
                "accepts both"
            ),
        ),
    ]
)


def is_known_exception(service: str, method: str, path: str, kind: str, message: str) -> str | None:
    for exc in EXCEPTIONS:
        if exc.service != service or exc.method not in (method.upper(), "*"):
            continue
        if exc.kind not in (kind, "*") or not re.fullmatch(exc.path, path):
            continue
        if re.search(exc.message, message, re.S):
            return exc.reason
    return None
