"""Admission, the queue, starts, cancel and leases in the store, on every backend.

Two stores opened on one database stand for two processes: every limit must hold across
them, whatever arrives at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.store import Generation, NewGeneration, Store, open_store
from services.store.jobs import AdmitRequest, GenerationLimits, Refusal
from tests.helpers.databases import BACKENDS, fresh_database

LEASE = timedelta(seconds=30)


@pytest.fixture(params=BACKENDS)
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    async with fresh_database(request.param, tmp_path) as url:
        first = await open_store(url)
        second = await open_store(url)
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


def job(user: str = "discord:1", **kw: object) -> NewGeneration:
    values: dict[str, object] = {"user_key": user, "prompt": "a cat", "model": "m/n"}
    values.update(kw)
    return NewGeneration(**values)  # type: ignore[arg-type]


def now() -> datetime:
    return datetime.now(UTC)


async def admit_one(
    store: Store, limits: GenerationLimits, *, user: str = "discord:1", owner: str = "p1"
) -> Generation | Refusal:
    t = now()
    [result] = await store.admit_generations([AdmitRequest(job(user), limits, owner, t, t + LEASE)])
    return result


async def burst(
    stores: tuple[Store, Store], limits: GenerationLimits, n: int = 50, users: int = 1
) -> list[Generation | Refusal]:
    """``n`` requests at once, alternating between the two stores (two processes)."""
    return await asyncio.gather(
        *(
            admit_one(stores[i % 2], limits, user=f"discord:{1 + i % users}", owner=f"p{i % 2}")
            for i in range(n)
        )
    )


def admitted(results: list[Generation | Refusal]) -> list[Generation]:
    return [r for r in results if isinstance(r, Generation)]


async def test_a_burst_against_the_daily_quota_gets_exactly_the_quota(
    two_stores: tuple[Store, Store],
) -> None:
    first, _ = two_stores
    limits = GenerationLimits(per_day=10, max_running=100, max_queued=100)
    for _ in range(2):
        assert isinstance(await admit_one(first, limits), Generation)
    results = await burst(two_stores, limits)
    assert len(admitted(results)) == 8
    refusals = [r for r in results if isinstance(r, Refusal)]
    assert {r.reason for r in refusals} == {"quota"}
    assert all(0 < r.retry_after <= 86400 for r in refusals)
    assert len(await first.unfinished_generations()) == 10, "a refusal uses nothing up"


async def test_a_burst_against_the_cooldown_gets_one(two_stores: tuple[Store, Store]) -> None:
    limits = GenerationLimits(cooldown=30, max_running=100, max_queued=100)
    results = await burst(two_stores, limits)
    assert len(admitted(results)) == 1
    waits = [r.retry_after for r in results if isinstance(r, Refusal)]
    assert len(waits) == 49 and all(0 < w <= 30 for w in waits)


async def test_a_burst_against_the_queue_gets_running_plus_queued(
    two_stores: tuple[Store, Store],
) -> None:
    limits = GenerationLimits(max_running=4, max_queued=20)
    results = await burst(two_stores, limits, users=50)
    assert len(admitted(results)) == 24
    assert {r.reason for r in results if isinstance(r, Refusal)} == {"busy"}


async def test_queue_order_is_admission_order_across_processes(
    two_stores: tuple[Store, Store],
) -> None:
    _, second = two_stores
    limits = GenerationLimits(max_running=1, max_queued=100)
    made = [
        admitted([await admit_one(two_stores[i % 2], limits, owner=f"p{i % 2}")])[0]
        for i in range(6)
    ]
    order = await second.queue_order()
    assert order.queued == tuple(g.id for g in made)
    assert order.position(made[3].id) == 4
    assert order.position("nope") is None


async def test_starts_hold_the_global_cap_and_the_order(two_stores: tuple[Store, Store]) -> None:
    """Each process starts only its own jobs, only when they are next in line."""
    first, second = two_stores
    limits = GenerationLimits(max_running=2, max_queued=100)
    owners = ["p0", "p1", "p1", "p0", "p0"]
    made = [
        admitted([await admit_one(first if o == "p0" else second, limits, owner=o)])[0]
        for o in owners
    ]
    t = now()
    # p1's first job is second in line: both p0's first and it may start, not p0's later ones.
    started_p0 = await first.claim_starts("p0", 2, t, t + LEASE)
    assert [g.id for g in started_p0] == [made[0].id]
    started_p1 = await second.claim_starts("p1", 2, t, t + LEASE)
    assert [g.id for g in started_p1] == [made[1].id]
    assert await first.claim_starts("p0", 2, t, t + LEASE) == []
    assert await second.claim_starts("p1", 2, t, t + LEASE) == []
    assert (await first.queue_order()).running == 2

    await first.finish_generation(made[0].id, "succeeded", finished_at=now())
    assert await first.claim_starts("p0", 2, t, t + LEASE) == [], "p1's job is next in line"
    [next_one] = await second.claim_starts("p1", 2, t, t + LEASE)
    assert next_one.id == made[2].id and next_one.status == "running"


async def test_starts_racing_never_exceed_the_cap(two_stores: tuple[Store, Store]) -> None:
    first, second = two_stores
    limits = GenerationLimits(max_running=3, max_queued=100)
    for i in range(20):
        await admit_one(two_stores[i % 2], limits, owner=f"p{i % 2}")
    t = now()
    started = await asyncio.gather(
        *(
            (first if i % 2 == 0 else second).claim_starts(f"p{i % 2}", 3, t, t + LEASE)
            for i in range(20)
        )
    )
    assert sum(len(s) for s in started) == 3
    assert (await first.queue_order()).running == 3


async def test_a_cancel_of_a_queued_job_always_wins_over_its_start(
    two_stores: tuple[Store, Store],
) -> None:
    first, second = two_stores
    limits = GenerationLimits(max_running=100, max_queued=100)
    for _ in range(20):
        made = await admit_one(first, limits, owner="p0")
        assert isinstance(made, Generation)
        t = now()
        cancel, started = await asyncio.gather(
            second.cancel_generation(made.id, t, "Canceled."),
            first.claim_starts("p0", 100, t, t + LEASE),
        )
        final = await first.get_generation(made.id)
        assert final is not None
        if cancel.outcome == "canceled":
            assert started == [] and final.status == "canceled"
        else:
            assert cancel.outcome == "requested" and final.status == "running"
            assert final.cancel_requested_at is not None
            await first.finish_generation(made.id, "canceled", finished_at=now())
        # Whatever the order, a canceled job is never started afterwards.
        assert await first.claim_starts("p0", 100, t, t + LEASE) == []


async def test_a_job_ends_once(two_stores: tuple[Store, Store]) -> None:
    first, second = two_stores
    made = await admit_one(first, GenerationLimits(max_running=10))
    assert isinstance(made, Generation)
    t = now()
    await first.claim_starts("p1", 10, t, t + LEASE)
    ends = await asyncio.gather(
        first.finish_generation(made.id, "succeeded", finished_at=now(), seed=1),
        second.finish_generation(made.id, "failed", finished_at=now(), error="x"),
    )
    assert sum(e is not None for e in ends) == 1


async def test_expired_leases_are_taken_over_once(two_stores: tuple[Store, Store]) -> None:
    first, second = two_stores
    limits = GenerationLimits(max_running=10, max_queued=100)
    t = now()
    made = [await admit_one(first, limits, owner="dead") for _ in range(6)]
    assert await first.renew_leases("dead", t + LEASE) == 6
    assert await second.take_over_generations("p2", now(), now() + LEASE) == [], "still leased"
    assert await first.expire_leases_of(["dead"], now()) == 6
    taken = await asyncio.gather(
        first.take_over_generations("p1", now(), now() + LEASE),
        second.take_over_generations("p2", now(), now() + LEASE),
    )
    ids = [g.id for batch in taken for g in batch]
    assert sorted(ids) == sorted(g.id for g in made if isinstance(g, Generation))
    assert all(g.lease_owner in ("p1", "p2") for batch in taken for g in batch)


async def test_released_leases_are_taken_at_once(two_stores: tuple[Store, Store]) -> None:
    first, second = two_stores
    made = await admit_one(first, GenerationLimits(), owner="leaving")
    assert isinstance(made, Generation)
    assert await first.release_leases("leaving", now()) == 1
    [taken] = await second.take_over_generations("p2", now(), now() + LEASE, sources=["discord"])
    assert taken.id == made.id and taken.lease_owner == "p2"
    assert await second.take_over_generations("p3", now(), now() + LEASE) == []


async def test_one_process_takes_each_slot(two_stores: tuple[Store, Store]) -> None:
    """Turns (e.g. Discord's one IDENTIFY per 5 s of a bucket) across processes."""
    first, second = two_stores
    interval = timedelta(seconds=5)
    t = now()
    waits = await asyncio.gather(
        *((first, second)[i % 2].claim_slot("identify:1:0", t, interval) for i in range(10))
    )
    assert sorted(w == 0 for w in waits).count(True) == 1
    assert all(0 < w <= 5 for w in waits if w)
    assert await first.claim_slot("identify:1:1", t, interval) == 0, "another bucket"
    assert await second.claim_slot("identify:1:0", t + interval, interval) == 0


async def test_a_change_of_commands_is_synced_by_one_process(
    two_stores: tuple[Store, Store],
) -> None:
    first, second = two_stores
    swaps = await asyncio.gather(
        *((first, second)[i % 2].swap_meta("command_sync_hash:1:all", "abc") for i in range(10))
    )
    assert [changed for changed, _ in swaps].count(True) == 1
    assert await first.swap_meta("command_sync_hash:1:all", "abc") == (False, "abc")
    assert await second.swap_meta("command_sync_hash:1:all", "def") == (True, "abc")
