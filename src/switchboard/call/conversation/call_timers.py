"""One call's named timers and background steps, all cancelled when the call ends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from loguru import logger

from switchboard.observability import metrics


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What runs the timers: the event loop, or a test's clock that it advances by hand."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable: ...


class CallTimers:
    """Named one-shot timers (re-arming a name replaces it) and the tasks they start."""

    def __init__(self, scheduler: Scheduler | None = None) -> None:
        self._scheduler = scheduler  # None: the running event loop
        self._timers: dict[str, Cancellable] = {}
        self._tasks: set[asyncio.Task] = set()

    def schedule(self, name: str, delay: float, action: Callable[[], Awaitable[None]]) -> None:
        self.cancel(name)
        scheduler = self._scheduler or asyncio.get_running_loop()
        self._timers[name] = scheduler.call_later(delay, lambda: self._fire(name, action))

    def cancel(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background; a failure is logged and counted, never lost."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _fire(self, name: str, action: Callable[[], Awaitable[None]]) -> None:
        self._timers.pop(name, None)
        self.spawn(action())


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        metrics.PIPELINE_ERRORS.labels(stage="call_control").inc()
        logger.opt(exception=error).error("call control step failed")
