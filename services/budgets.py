"""Monthly budgets: of each server (its setting, or ``GUILD_MONTHLY_BUDGET_USD``) and of
each API key. The store refuses a job whose budget is used up in the same step that
admits it (:class:`services.store.usage.BudgetTally`); this module says which budgets a
job counts against, words the refusal, and tells a server's admins once a month, in the
channel they chose (or the system channel), that their budget is used up.

Jobs that run are never cut off: a budget only stops new ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from services.api_keys import ApiKey
from services.costs import month_bounds, usd
from services.guild_settings import GuildConfig, GuildSettings
from services.store import Store
from services.store.jobs import Refusal
from services.store.usage import Budget
from services.tasks import spawn

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BudgetNotice:
    """A server's budget is used up: what its admins are told."""

    guild_id: int
    #: Where to post it (None: the server's system channel).
    channel_id: int | None
    limit: float
    spent: float
    resets_at: datetime

    def text(self) -> str:
        return (
            f"⚠️ This server has used its monthly budget: about {usd(self.spent)} of "
            f"{usd(self.limit)} (estimated). New generations and trainings are refused until "
            f"{reset_text(self.resets_at)}; jobs already running finish. An admin can raise "
            "it with `/settings set setting:budget`."
        )


class BudgetNotifier(Protocol):
    """How a front end tells a server's admins (the Discord cog implements it)."""

    async def budget_reached(self, notice: BudgetNotice) -> bool:
        """Post the notice; True once it went out."""


def reset_text(when: datetime) -> str:
    return f"{when.day} {when:%B %Y}, 00:00 UTC"


def refusal_text(refusal: Refusal) -> str:
    budget = refusal.budget
    assert budget is not None
    whose = "This server" if budget.kind == "guild" else "This API key"
    return (
        f"{whose} has used its monthly budget of {usd(budget.limit)} (estimated cost). "
        f"New jobs are refused until {reset_text(budget.until)}."
    )


class Budgets:
    def __init__(self, store: Store, guild_settings: GuildSettings) -> None:
        self.store = store
        self.guild_settings = guild_settings
        #: Set by the Discord front end; without it nobody is told (and nothing claimed).
        self.notifier: BudgetNotifier | None = None
        #: Servers whose spending is being checked, and those that ended another job
        #: meanwhile (checked once more after): a burst of 800 ends is a few checks.
        self._checking: set[int] = set()
        self._check_again: set[int] = set()

    def for_job(
        self, config: GuildConfig | None, key: ApiKey | None, now: datetime
    ) -> tuple[Budget, ...]:
        """The budgets a job of this server and this API key counts against."""
        since, until = month_bounds(now)
        budgets = []
        if config is not None and config.guild_id is not None and config.budget > 0:
            budgets.append(Budget("guild", str(config.guild_id), config.budget, since, until))
        if key is not None and key.budget_usd:
            budgets.append(Budget("key", key.user_key, key.budget_usd, since, until))
        return tuple(budgets)

    def refused(self, refusal: Refusal) -> None:
        """A job was refused: if for a budget, tell whoever must hear of it (once)."""
        if refusal.reason == "budget" and refusal.budget is not None:
            spawn(self._reached(refusal.budget, None), name="budget-reached")

    def job_ended(self, guild_id: int | None, cost: float | None) -> None:
        """A server's job ended: if that used the budget up, say so now rather than
        at the next refusal."""
        if guild_id is None or not cost:
            return
        if guild_id in self._checking:
            self._check_again.add(guild_id)
            return
        self._checking.add(guild_id)
        spawn(self._check_guild_until_current(guild_id), name=f"budget-check-{guild_id}")

    async def _check_guild_until_current(self, guild_id: int) -> None:
        try:
            while True:
                self._check_again.discard(guild_id)
                await self._check_guild(guild_id)
                if guild_id not in self._check_again:
                    return
        finally:
            self._checking.discard(guild_id)

    async def _check_guild(self, guild_id: int) -> None:
        config = await self.guild_settings.config(guild_id)
        [budget, *_] = self.for_job(config, None, datetime.now(UTC)) or [None]
        if budget is None:
            return
        spent = await self.store.month_spend(budget)
        if spent >= budget.limit:
            await self._reached(budget, spent)

    async def _reached(self, budget: Budget, spent: float | None) -> None:
        period = f"{budget.since:%Y-%m}"
        if budget.kind == "key":
            if await self.store.claim_budget_notice(
                f"key:{budget.scope}"[:64], period, datetime.now(UTC)
            ):
                log.warning(
                    "API key %s used its monthly budget of %s", budget.scope, usd(budget.limit)
                )
            return
        notifier = self.notifier
        if notifier is None:
            return
        if spent is None:
            spent = await self.store.month_spend(budget)
        guild_id = int(budget.scope)
        if not await self.store.claim_budget_notice(f"guild:{guild_id}", period, datetime.now(UTC)):
            return
        config = await self.guild_settings.config(guild_id)
        notice = BudgetNotice(guild_id, config.budget_channel, budget.limit, spent, budget.until)
        log.info("guild %s used its monthly budget of %s", guild_id, usd(budget.limit))
        try:
            await notifier.budget_reached(notice)
        except Exception:
            log.exception("could not tell guild %s that its budget is used up", guild_id)
