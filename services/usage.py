"""Who used what: jobs, GPU seconds and estimated cost today, this month and over the
last 30 days, per day for the chart; of one member, one server or one API key.

Counted by the day (UTC) a job was asked for. ``generations`` and ``trainings`` count
the jobs that succeeded; GPU seconds (Replicate's ``predict_time``) and costs count
every job that ran, failed ones too. Costs are estimates (:mod:`services.costs`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from services.api_keys import ApiKey
from services.budgets import Budgets
from services.costs import month_bounds
from services.guild_settings import GuildSettings
from services.store import Store
from services.store.usage import Budget, DayUsage, UserUsage

DAYS: Final = 30


@dataclass(frozen=True, slots=True)
class Totals:
    generations: int = 0
    images: int = 0
    trainings: int = 0
    gpu_seconds: float = 0.0
    cost_usd: float = 0.0

    @property
    def jobs(self) -> int:
        return self.generations + self.trainings

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.generations + other.generations,
            self.images + other.images,
            self.trainings + other.trainings,
            self.gpu_seconds + other.gpu_seconds,
            self.cost_usd + other.cost_usd,
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gpu_seconds"] = round(self.gpu_seconds, 3)
        data["cost_usd"] = round(self.cost_usd, 6)
        return data


@dataclass(frozen=True, slots=True)
class BudgetState:
    limit: float
    #: This month's estimated spend, jobs still running at their estimate.
    spent: float
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class UsageReport:
    today: Totals
    month: Totals
    last_30_days: Totals
    #: The last 30 days, oldest first (today last).
    days: tuple[tuple[date, Totals], ...]
    budget: BudgetState | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "today": self.today.as_dict(),
            "month": self.month.as_dict(),
            "last_30_days": self.last_30_days.as_dict(),
            "days": [{"date": day.isoformat(), **totals.as_dict()} for day, totals in self.days],
            "budget": None
            if self.budget is None
            else {
                "limit_usd": self.budget.limit,
                "spent_usd": round(self.budget.spent, 6),
                "resets_at": self.budget.resets_at.isoformat().replace("+00:00", "Z"),
            },
            "estimated": True,
        }


def _totals(rows: Iterable[DayUsage]) -> Totals:
    total = Totals()
    for row in rows:
        generation = row.kind == "generation"
        total = total + Totals(
            generations=row.jobs if generation else 0,
            images=row.images,
            trainings=0 if generation else row.jobs,
            gpu_seconds=row.gpu_seconds,
            cost_usd=row.cost_usd,
        )
    return total


class UsageService:
    def __init__(self, store: Store, guild_settings: GuildSettings, budgets: Budgets) -> None:
        self.store = store
        self.guild_settings = guild_settings
        self.budgets = budgets

    async def for_user(self, user_key: str, now: datetime | None = None) -> UsageReport:
        return await self._report(now, user_key=user_key)

    async def for_guild(self, guild_id: int, now: datetime | None = None) -> UsageReport:
        now = now or datetime.now(UTC)
        config = await self.guild_settings.config(guild_id)
        budgets = self.budgets.for_job(config, None, now)
        return await self._report(now, guild_id=guild_id, budget=budgets[0] if budgets else None)

    async def for_key(self, key: ApiKey, now: datetime | None = None) -> UsageReport:
        now = now or datetime.now(UTC)
        budgets = self.budgets.for_job(None, key, now)
        return await self._report(
            now, user_key=key.user_key, budget=budgets[0] if budgets else None
        )

    async def top_users(
        self, guild_id: int, now: datetime | None = None, limit: int = 10
    ) -> list[UserUsage]:
        """This month's heaviest users of a server."""
        since, _ = month_bounds(now or datetime.now(UTC))
        return await self.store.top_users(guild_id, since, limit)

    async def _report(
        self,
        now: datetime | None,
        *,
        user_key: str | None = None,
        guild_id: int | None = None,
        budget: Budget | None = None,
    ) -> UsageReport:
        now = (now or datetime.now(UTC)).astimezone(UTC)
        today = now.date()
        first_day = today - timedelta(days=DAYS - 1)
        month_start, _ = month_bounds(now)
        since = min(month_start, datetime.combine(first_day, datetime.min.time(), UTC))
        rows = await self.store.usage_by_day(since=since, user_key=user_key, guild_id=guild_id)
        by_day: dict[date, list[DayUsage]] = {}
        for row in rows:
            by_day.setdefault(date.fromisoformat(row.day), []).append(row)
        days = tuple(
            (first_day + timedelta(days=n), _totals(by_day.get(first_day + timedelta(days=n), ())))
            for n in range(DAYS)
        )
        state = None
        if budget is not None:
            spent = await self.store.month_spend(budget)
            state = BudgetState(budget.limit, spent, budget.until)
        return UsageReport(
            today=_totals(by_day.get(today, ())),
            month=_totals(r for r in rows if date.fromisoformat(r.day) >= month_start.date()),
            last_30_days=_totals(r for r in rows if date.fromisoformat(r.day) >= first_day),
            days=days,
            budget=state,
        )

    async def chart(self, report: UsageReport, title: str) -> bytes:
        """The last 30 days as a PNG (drawn in a thread: it takes a few tens of ms)."""
        from services.usage_chart import render_chart

        return await asyncio.to_thread(render_chart, report.days, title)
