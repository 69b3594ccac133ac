"""services.tasks.spawn: background tasks are held until done, and their failures logged."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from services.tasks import running_tasks, spawn


async def test_a_task_is_held_until_done_and_gives_its_result() -> None:
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 7

    task = spawn(work(), name="held")
    task_id = id(task)
    del task
    gc.collect()
    held = [t for t in running_tasks() if id(t) == task_id]
    assert [t.get_name() for t in held] == ["held"]
    release.set()
    assert await held[0] == 7
    assert held[0] not in running_tasks()


async def test_a_failure_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom 42")

    with caplog.at_level(logging.ERROR, logger="services.tasks"):
        task = spawn(broken(), name="broken-task")
        with pytest.raises(RuntimeError):
            await task
        await asyncio.sleep(0)
    records = [r for r in caplog.records if "broken-task" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is not None
    assert "boom 42" in str(records[0].exc_info[1])


async def test_cancellation_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    task = spawn(asyncio.sleep(60), name="canceled-task")
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert task not in running_tasks()
    assert not [r for r in caplog.records if "canceled-task" in r.getMessage()]
