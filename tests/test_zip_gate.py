"""The bound on zip checks running at once: the others wait in turn and are told so."""

from __future__ import annotations

import asyncio

from services.zip_gate import FIRST_GUESS_SECONDS, ZipCheckGate


async def test_at_most_limit_at_once_first_come_first_served() -> None:
    gate = ZipCheckGate(2)
    release = asyncio.Event()
    started: list[int] = []
    told: dict[int, int] = {}
    most = 0

    async def check(number: int) -> None:
        nonlocal most

        async def waiting(ahead: int) -> None:
            told[number] = ahead

        async with gate.turn(waiting):
            started.append(number)
            most = max(most, gate.running)
            await release.wait()

    tasks = []
    for number in range(5):
        tasks.append(asyncio.create_task(check(number)))
        await asyncio.sleep(0)  # each runs to its turn (or its wait) before the next
    assert started == [0, 1] and gate.running == 2 and gate.waiting == 3
    assert told == {2: 2, 3: 3, 4: 4}
    assert gate.ahead() == 5
    assert gate.expected_wait() == 2 * FIRST_GUESS_SECONDS
    release.set()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2, 3, 4] and most == 2
    assert gate.running == gate.waiting == gate.ahead() == 0
    assert gate.expected_wait() == 0.0


async def test_a_check_canceled_while_waiting_gives_up_its_place() -> None:
    gate = ZipCheckGate(1)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.turn():
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with gate.turn():
            pass

    first = asyncio.create_task(holder())
    await held.wait()
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert gate.waiting == 0 and gate.running == 1
    release.set()
    await first
    async with gate.turn():
        assert gate.running == 1
