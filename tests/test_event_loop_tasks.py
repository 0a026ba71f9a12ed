"""The worker's loop monitor reports how many tasks its event loop holds (``event_loop_tasks``)."""

from __future__ import annotations

import asyncio

from switchboard.observability import metrics
from switchboard.worker.service import _event_loop_lag_monitor


async def _gauge_reaches(value: float, timeout_s: float = 2.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if metrics.EVENT_LOOP_TASKS._value.get() == value:
            return True
        await asyncio.sleep(0.005)
    return False


async def test_gauge_follows_tasks_started_and_finished() -> None:
    monitor = asyncio.create_task(_event_loop_lag_monitor(period=0.005))
    try:
        await asyncio.sleep(0.05)
        baseline = metrics.EVENT_LOOP_TASKS._value.get()
        release = asyncio.Event()
        extra = [asyncio.create_task(release.wait()) for _ in range(25)]
        assert await _gauge_reaches(baseline + 25)
        release.set()
        await asyncio.gather(*extra)
        assert await _gauge_reaches(baseline)
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
