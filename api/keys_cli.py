"""``python bot.py api-keys create|list|revoke``: the HTTP API's keys, from a shell.

Only ``DATABASE_URL`` (and ``API_TOKEN``, listed as the key ``default``) is read, from
the environment or ``.env``, so no Discord or Replicate token is needed here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.api_keys import DEFAULT_NAME, ApiKeys, key_user_key
from services.costs import month_bounds, usd
from services.errors import UserFacingError
from services.store import open_store
from services.store.api_keys import ApiKeyRecord


class _StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: str = "sqlite:///data/bot.sqlite3"
    api_token: SecretStr | None = None


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="bot.py api-keys",
        description="Keys of the HTTP API. Each has its own cooldown, daily quota, monthly "
        "budget and usage; only a hash of each key is stored.",
    )
    commands = root.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key and print it (once)")
    create.add_argument("name", help="1-64 letters, digits, '.', '_' or '-'")
    create.add_argument(
        "--per-day",
        type=int,
        metavar="N",
        help="generations a day (0 = unlimited; default GENERATIONS_PER_USER_PER_DAY)",
    )
    create.add_argument(
        "--budget", type=float, metavar="USD", help="monthly budget in USD (default: none)"
    )
    create.add_argument(
        "--cooldown",
        type=float,
        metavar="SECONDS",
        help="seconds between two generations (default GENERATE_COOLDOWN_SECONDS)",
    )
    commands.add_parser("list", help="every key, with this month's usage")
    revoke = commands.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("name")
    return root


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        settings = _StoreSettings()
    except ValidationError as exc:
        print(f"Configuration error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, settings))
    except UserFacingError as exc:
        print(exc.user_message, file=sys.stderr)
        return 1
    except ValueError as exc:  # a DATABASE_URL the store cannot use
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, settings: _StoreSettings) -> int:
    store = await open_store(settings.database_url)
    try:
        keys = ApiKeys(settings.api_token, store)
        if args.command == "create":
            record, key = await keys.create(
                args.name, per_day=args.per_day, cooldown=args.cooldown, budget_usd=args.budget
            )
            print(
                f"Created API key {record.name!r} ({_limits(record)}). Copy it now: only "
                "its hash is stored, it cannot be shown again.",
                file=sys.stderr,
            )
            print(key)
            return 0
        if args.command == "revoke":
            if not await keys.revoke(args.name):
                raise UserFacingError(f"No active key is named {args.name!r}.")
            print(f"Revoked API key {args.name!r}: it is refused from now on.", file=sys.stderr)
            return 0
        await _list(keys, settings)
        return 0
    finally:
        await store.close()


async def _list(keys: ApiKeys, settings: _StoreSettings) -> None:
    since, _ = month_bounds(datetime.now(UTC))
    rows = [("NAME", "CREATED", "LIMITS", "THIS MONTH", "STATUS")]
    if settings.api_token is not None:
        rows.append((DEFAULT_NAME, "-", "owner's defaults", "-", "API_TOKEN"))
    for record in await keys.list():
        usage = await keys.store.usage_by_day(since=since, user_key=key_user_key(record.id))
        jobs = sum(day.jobs for day in usage)
        cost = sum(day.cost_usd for day in usage)
        status = "active" if record.active else f"revoked {record.revoked_at:%Y-%m-%d}"
        rows.append(
            (
                record.name,
                f"{record.created_at:%Y-%m-%d}",
                _limits(record),
                f"{jobs} job{'' if jobs == 1 else 's'}, ~{usd(cost)}",
                status,
            )
        )
    if len(rows) == 1:
        print("No API keys. Make one with: python bot.py api-keys create NAME", file=sys.stderr)
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _limits(record: ApiKeyRecord) -> str:
    parts = []
    if record.per_day is not None:
        parts.append("unlimited per day" if record.per_day == 0 else f"{record.per_day}/day")
    if record.cooldown is not None:
        parts.append(f"cooldown {record.cooldown:g} s")
    if record.budget_usd is not None:
        parts.append(f"budget {usd(record.budget_usd)}/month")
    return ", ".join(parts) or "owner's defaults"
