"""``CallContext``: everything one running call needs, in one object.

Modelled on LiveKit Agents' ``JobContext``: the call runner, and what it starts, read the
call's ids, agent, ingress adapter, carried-on session, slot, log and end-of-call callbacks
from here, whichever ingress the call came through (``call.host.CallHost`` builds it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from switchboard.agent.config import AgentConfig
from switchboard.call.record import CallRecord
from switchboard.call_log import CallLog
from switchboard.settings import Settings
from switchboard.telephony.base import CallAdapter, CallIds

if TYPE_CHECKING:
    from switchboard.dispatch.sessions import CallSession, CallSessions
    from switchboard.records.archive import CallArchive

CallEndedHook = Callable[[CallRecord], Awaitable[None]]


class CallSlot(Protocol):
    """A worker slot held for the call; released exactly once when the call ends."""

    async def release(self, record: CallRecord | None) -> None: ...


@dataclass
class CallContext:
    """One call: what it is, who answers, what carries it, and what happens when it ends."""

    adapter: CallAdapter
    agent: AgentConfig
    settings: Settings
    record: CallRecord
    slot: CallSlot | None = None
    archive: CallArchive | None = None
    # In a pool: the session kept in Redis as the call goes (``worker_id`` holds it), and the
    # one this call carries on from another worker, if it does.
    sessions: CallSessions | None = None
    worker_id: str = ""
    resumed: CallSession | None = None
    opening: str | None = None  # said instead of the greeting (by default ``agent.resumed``)
    on_ended: Sequence[CallEndedHook] = ()

    @property
    def ids(self) -> CallIds:
        return self.adapter.ids

    @property
    def log(self) -> CallLog:
        return self.record.log
