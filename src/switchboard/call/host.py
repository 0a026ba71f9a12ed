"""``CallHost``: the one admission every call goes through, whatever brought it.

An ingress builds its adapter (the transport and call-control operations) and a
:class:`~switchboard.call.ticket.CallTicket`; :meth:`CallHost.run` does the rest, once for every
ingress: the log context, loading the session of a call carried on from another worker, the
agent choice, RUNNING in the call ledger, the drain hand-off, the call itself
(:func:`~switchboard.call.runner.run_call`: record, end-of-call hooks, slot release).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from switchboard.agent.directory import AgentDirectory
from switchboard.call.context import CallContext, CallEndedHook, CallSlot
from switchboard.call.record import CallRecord, RecentCalls
from switchboard.call.runner import run_call
from switchboard.call.ticket import CallTicket
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.models import CallStatus
from switchboard.dispatch.sessions import CallSessions
from switchboard.observability.logging import call_context
from switchboard.records.archive import CallArchive
from switchboard.settings import Settings
from switchboard.telephony.base import CallAdapter
from switchboard.telephony.twilio_rest import RESUMED_AFTER_TRANSFER


class Pool(Protocol):
    """What admission needs of a pooled worker (``worker.service.WorkerService``)."""

    worker_id: str
    sessions: CallSessions
    ledger: CallLedger

    def on_hand_off(self, task: asyncio.Task, hand_off: Callable[[], None]) -> None: ...

    @staticmethod
    async def _safe(coro: Awaitable[None]) -> None: ...


class CallHost:
    """Admits and runs the calls of one worker process."""

    def __init__(
        self,
        settings: Settings,
        agents: AgentDirectory,
        calls: RecentCalls,
        *,
        archive: CallArchive | None = None,
        on_ended: Sequence[CallEndedHook] = (),
        pool: Pool | None = None,
        runner: Callable[[CallContext], Awaitable[CallRecord]] = run_call,
    ):
        """``pool``: the pooled worker's Redis side (None standalone); ``runner`` runs the
        admitted call (a test may stand in for the pipeline)."""
        self.settings = settings
        self.agents = agents
        self.calls = calls
        self.archive = archive
        self.on_ended = on_ended
        self.pool = pool
        self._runner = runner

    async def run(
        self, ticket: CallTicket, adapter: CallAdapter, *, slot: CallSlot | None = None
    ) -> CallRecord:
        """Run the call to its end; ``slot`` (held or to be taken) is released once, after."""
        with call_context(ticket.call_id):
            return await self._admit(ticket, adapter, slot)

    async def _admit(
        self, ticket: CallTicket, adapter: CallAdapter, slot: CallSlot | None
    ) -> CallRecord:
        pool = self.pool
        resumed = None
        # Only a call that can go on elsewhere keeps a session (a browser call cannot).
        sessions = pool.sessions if pool is not None and ticket.movable else None
        if sessions is not None and ticket.resumes:
            resumed = await sessions.load(ticket.call_id)
        agent = (resumed and self.agents.by_name(resumed.agent)) or self.agents.choose(ticket.route)
        opening = agent.transfer_unanswered if ticket.resume_after == RESUMED_AFTER_TRANSFER else None
        if pool is not None:
            if ticket.mark_running:
                await pool._safe(
                    pool.ledger.record(ticket.call_id, CallStatus.RUNNING, worker=pool.worker_id)
                )
            if (task := asyncio.current_task()) is not None:
                # Out of drain time, the call goes on elsewhere if its ingress can do that.
                pool.on_hand_off(task, adapter.hand_off)
        ids = adapter.ids
        record = CallRecord(
            call_sid=ids.call_sid,
            stream_sid=ids.stream_sid,
            call_id=ids.call_id,
            ingress=adapter.ingress,
            agent=agent.name,
            redaction=agent.redaction if agent.redaction.enabled else None,
            digits_kept_for=frozenset(
                i.name for i in agent.intents if i.collect_digits is not None and not i.collect_digits.pii
            ),
        )
        self.calls.add(record)
        return await self._runner(
            CallContext(
                adapter=adapter,
                agent=agent,
                settings=self.settings,
                record=record,
                slot=slot,
                archive=self.archive,
                sessions=sessions,
                worker_id=pool.worker_id if pool is not None else "",
                resumed=resumed,
                opening=opening,
                on_ended=self.on_ended,
            )
        )
