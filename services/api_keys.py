"""Keys of the HTTP API, each with its own cooldown, quota, budget and usage.

A key is shown once, when it is created; the store keeps only its SHA-256 (a key is 256
random bits, so a fast hash is as good as a slow one). ``API_TOKEN`` keeps working as
the key named ``default``, with the owner's limits. Keys are looked up in the store on
every request, so one created or revoked by another process counts at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from pydantic import SecretStr
from sqlalchemy import exc as sa_exc

from services.errors import UserFacingError
from services.store import Store
from services.store.api_keys import ApiKeyRecord

KEY_PREFIX: Final = "rib_"
DEFAULT_NAME: Final = "default"
NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY_USER_PREFIX: Final = "api-key:"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def token_user_key(token: str) -> str:
    """The user key of ``API_TOKEN`` (the ``default`` key); never the token itself."""
    return "api:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def key_user_key(key_id: str) -> str:
    """The user key under which a stored key's jobs, quota and budget are kept."""
    return KEY_USER_PREFIX + key_id


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key that authenticated: its name and its limits (None: the owner's value)."""

    name: str
    user_key: str
    per_day: int | None = None
    cooldown: float | None = None
    budget_usd: float | None = None


def _key_of(record: ApiKeyRecord) -> ApiKey:
    return ApiKey(
        name=record.name,
        user_key=key_user_key(record.id),
        per_day=record.per_day,
        cooldown=record.cooldown,
        budget_usd=record.budget_usd,
    )


class ApiKeys:
    def __init__(self, api_token: SecretStr | None, store: Store) -> None:
        #: ``API_TOKEN``: the key named ``default``.
        self.api_token = api_token
        self.store = store

    def _default(self) -> tuple[str, ApiKey] | None:
        token = self.api_token
        if token is None:
            return None
        secret = token.get_secret_value()
        return secret, ApiKey(name=DEFAULT_NAME, user_key=token_user_key(secret))

    async def authenticate(self, given: str) -> ApiKey | None:
        """The key ``given`` is, if it is an active one."""
        default = self._default()
        if default is not None and hmac.compare_digest(
            given.encode("utf-8", "replace"), default[0].encode("utf-8", "replace")
        ):
            return default[1]
        if not given.startswith(KEY_PREFIX):
            return None
        record = await self.store.api_key_by_hash(hash_key(given))
        return _key_of(record) if record is not None else None

    async def enabled(self) -> bool:
        """Whether any key works (``API_TOKEN`` set, or a key created)."""
        return self.api_token is not None or await self.store.has_api_keys()

    async def for_user_key(self, user_key: str) -> ApiKey | None:
        """The stored key whose jobs are kept under ``user_key`` (revoked ones too)."""
        if not user_key.startswith(KEY_USER_PREFIX):
            return None
        record = await self.store.get_api_key(user_key.removeprefix(KEY_USER_PREFIX))
        return _key_of(record) if record is not None else None

    async def create(
        self,
        name: str,
        *,
        per_day: int | None = None,
        cooldown: float | None = None,
        budget_usd: float | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """A new key: its record and the key itself, which is never stored."""
        if not NAME.fullmatch(name):
            raise UserFacingError(
                "A key name is 1-64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit."
            )
        if name == DEFAULT_NAME:
            raise UserFacingError("`default` is API_TOKEN's name; pick another one.")
        if per_day is not None and per_day < 0:
            raise UserFacingError("--per-day must be 0 (unlimited) or more.")
        if cooldown is not None and not 0 <= cooldown <= 86400:
            raise UserFacingError("--cooldown must be between 0 and 86400 seconds.")
        if budget_usd is not None and not 0 < budget_usd <= 1_000_000:
            raise UserFacingError("--budget must be more than 0 and at most 1000000 USD.")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            record = await self.store.create_api_key(
                name,
                hash_key(key),
                per_day=per_day,
                cooldown=cooldown,
                budget_usd=budget_usd,
                now=datetime.now(UTC),
            )
        except sa_exc.IntegrityError:
            raise UserFacingError(f"A key named `{name}` exists already.") from None
        return record, key

    async def list(self) -> list[ApiKeyRecord]:
        return await self.store.list_api_keys()

    async def revoke(self, name: str) -> bool:
        """Revoke the active key ``name``: it is refused from now on, in every process."""
        if name == DEFAULT_NAME:
            raise UserFacingError("`default` is API_TOKEN: unset API_TOKEN to disable it.")
        return await self.store.revoke_api_key(name, datetime.now(UTC))
