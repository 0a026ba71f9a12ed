"""Keeps a call's session in Redis up to date as the conversation goes (turn by turn).

Each finished caller turn and each agent reply changes the call's LLM context; the keeper
writes the context (and the call-control events so far) to the call's session, so that if this
worker dies the next one carries the call on from the last turn (``dispatch.sessions``).
Writes happen on one task, newest state first, never on the frame path, and a Redis error costs
that write, not the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from loguru import logger
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.aggregators.llm_context import LLMContext

from switchboard.dispatch.sessions import CallSession, CallSessions, history_of
from switchboard.observability import metrics


class SessionKeeper(BaseObserver):
    """Writes ``session`` (history from ``context``, events from ``events()``: all of the call's,
    those of the workers it was on before included) when they change."""

    frame_types = (LLMContextFrame, LLMFullResponseEndFrame, BotStoppedSpeakingFrame)

    def __init__(
        self,
        store: CallSessions,
        session: CallSession,
        context: LLMContext,
        worker_id: str,
        events: Callable[[], list[dict[str, Any]]] = list,
    ):
        super().__init__()
        self._store = store
        self._session = session
        self._context = context
        self._worker_id = worker_id
        self._events = events
        self._saved: tuple[int, int] = (-1, -1)
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Write the session now (a resume after this knows the agent and that the caller
        was greeted), then keep it up to date."""
        await self._save()
        self._task = asyncio.create_task(self._writer(), name="session-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def on_push_frame(self, data: FramePushed) -> None:
        if self._shape() != self._saved:
            self._dirty.set()

    def _shape(self) -> tuple[int, int]:
        return len(self._context.get_messages()), len(self._events())

    async def _writer(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._save()

    async def _save(self) -> None:
        shape = self._shape()
        session = self._session
        session.history = history_of(self._context.get_messages())
        session.events = self._events()
        try:
            await self._store.save(session, self._worker_id)
            self._saved = shape
        except (redis.RedisError, OSError) as e:
            metrics.CONNECTION_ERRORS.labels(transport="redis").inc()
            logger.warning(f"{session.call_id}: could not save the call session: {e}")
