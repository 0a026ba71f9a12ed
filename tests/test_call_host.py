"""Admission, in-process: every ingress hands ``CallHost.run`` an adapter and a ticket, and the
host chooses the agent, loads the session, writes the ledger, registers the drain hand-off and
sets the log context the same way for each (the call itself is a stand-in runner here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from switchboard.agent.config import load_agent_config
from switchboard.agent.directory import AgentDirectory
from switchboard.call.context import CallContext
from switchboard.call.host import CallHost
from switchboard.call.record import CallRecord, RecentCalls
from switchboard.call.ticket import CallTicket
from switchboard.dispatch.models import CallStatus, Job, JobKind, SipAttributes
from switchboard.dispatch.sessions import CallSession
from switchboard.observability.logging import current_call_id
from switchboard.settings import Settings
from switchboard.telephony.base import CallAdapter, CallIds, NoCallControl
from switchboard.telephony.twilio import StreamStart
from switchboard.worker.jobs import job_route
from switchboard.worker.streams import stream_ticket

AGENTS = Path(__file__).parent / "agents" / "numbers"
DEFAULT = load_agent_config(Path(__file__).parents[1] / "src/switchboard/agents/receptionist.yaml")
CONTROL_LINE = "+15005550101"  # tests/agents/numbers/call_control.yaml


class FakeAdapter(CallAdapter):
    ingress = "twilio"
    out_sample_rate = 8000

    def __init__(self, call_id: str = "", call_sid: str = "CA1") -> None:
        self.ids = CallIds(call_sid=call_sid, stream_sid="MZ1", call_id=call_id)
        self.control = NoCallControl()
        self.handed_off = False

    def transport(self):  # pragma: no cover - the stand-in runner builds no pipeline
        raise AssertionError("no pipeline in admission tests")

    def hand_off(self) -> None:
        self.handed_off = True


class FakeSessions:
    def __init__(self, sessions: dict[str, CallSession]) -> None:
        self.sessions = sessions
        self.loaded: list[str] = []

    async def load(self, call_id: str) -> CallSession | None:
        self.loaded.append(call_id)
        return self.sessions.get(call_id)


class FakeLedger:
    def __init__(self) -> None:
        self.written: list[tuple[str, CallStatus, dict]] = []

    async def record(self, call_id: str, status: CallStatus, **fields) -> None:
        self.written.append((call_id, status, fields))


class FakePool:
    worker_id = "w1"

    def __init__(self, sessions: dict[str, CallSession] | None = None) -> None:
        self.sessions = FakeSessions(sessions or {})
        self.ledger = FakeLedger()
        self.hand_offs: dict[asyncio.Task, object] = {}

    def on_hand_off(self, task, hand_off) -> None:
        self.hand_offs[task] = hand_off

    @staticmethod
    async def _safe(coro) -> None:
        await coro


class Ran:
    """The stand-in runner: what admission handed the call, and the log context it ran in."""

    def __init__(self) -> None:
        self.context: CallContext | None = None
        self.log_id = ""

    async def __call__(self, ctx: CallContext) -> CallRecord:
        self.context, self.log_id = ctx, current_call_id()
        ctx.record.outcome = "completed"
        return ctx.record


def a_host(pool: FakePool | None) -> tuple[CallHost, Ran, RecentCalls]:
    ran, calls = Ran(), RecentCalls()
    agents = AgentDirectory(DEFAULT, AGENTS)
    host = CallHost(Settings(), agents, calls, pool=pool, runner=ran)  # type: ignore[arg-type]
    return host, ran, calls


async def test_a_pooled_stream_gets_its_numbers_agent_the_ledger_the_hand_off_and_a_session() -> None:
    pool = FakePool()
    host, ran, calls = a_host(pool)
    start = StreamStart("MZ1", "CA1", "AC1", {"To": CONTROL_LINE, "From": "+15550001111"})
    adapter = FakeAdapter("call-1")
    record = await host.run(stream_ticket("call-1", start, movable=True, resumes=True), adapter)
    ctx = ran.context
    assert ctx is not None and ctx.agent.name == "Call control test agent"
    assert ran.log_id == "call-1" and ctx.sessions is pool.sessions and ctx.resumed is None
    assert pool.sessions.loaded == ["call-1"]
    assert pool.ledger.written == [("call-1", CallStatus.RUNNING, {"worker": "w1"})]
    (hand_off,) = pool.hand_offs.values()
    hand_off()  # type: ignore[operator]
    assert adapter.handed_off
    assert calls.get("call-1") is record and record.agent == ctx.agent.name


async def test_a_resumed_stream_keeps_its_agent_and_after_a_lost_transfer_opens_with_that_line() -> None:
    session = CallSession(call_id="call-2", agent="Call control test agent", history=[{"role": "user", "content": "hi"}])
    pool = FakePool({"call-2": session})
    host, ran, _ = a_host(pool)
    # Dialed to the default agent's number now, but the session says who answered before.
    start = StreamStart("MZ2", "CA2", "AC1", {"To": "+19999999999", "ResumeAfter": "transfer_unanswered"})
    await host.run(stream_ticket("call-2", start, movable=True, resumes=True), FakeAdapter("call-2"))
    ctx = ran.context
    assert ctx is not None and ctx.resumed == session
    assert ctx.agent.name == "Call control test agent"
    assert ctx.opening == ctx.agent.transfer_unanswered


async def test_a_standalone_stream_has_no_pool_work_but_the_same_agent_choice_and_log_context() -> None:
    host, ran, _ = a_host(None)
    start = StreamStart("MZ3", "CA3", "AC1", {"To": CONTROL_LINE})
    await host.run(stream_ticket("call-CA3", start, movable=False, resumes=False), FakeAdapter())
    ctx = ran.context
    assert ctx is not None and ctx.agent.name == "Call control test agent"
    assert ran.log_id == "call-CA3" and ctx.sessions is None and ctx.worker_id == ""


async def test_a_browser_call_is_admitted_like_a_stream_without_a_session() -> None:
    pool = FakePool()
    host, ran, _ = a_host(pool)
    await host.run(CallTicket(call_id="call-webrtc-1"), FakeAdapter("call-webrtc-1"))
    ctx = ran.context
    assert ctx is not None and ctx.agent is DEFAULT
    assert ran.log_id == "call-webrtc-1"  # browser calls log with their id now too
    assert ctx.sessions is None and pool.sessions.loaded == []  # a browser call cannot move
    assert pool.ledger.written == [("call-webrtc-1", CallStatus.RUNNING, {"worker": "w1"})]


async def test_a_room_job_chooses_by_trunk_resumes_and_leaves_running_to_the_claim() -> None:
    pool = FakePool()
    host, ran, _ = a_host(pool)
    job = Job(
        kind=JobKind.LIVEKIT_ROOM,
        call_id="call-lk",
        room="room-1",
        sip=SipAttributes(trunk_phone_number=CONTROL_LINE),
    )
    ticket = CallTicket(call_id=job.call_id, route=job_route(job), movable=True, resumes=True, mark_running=False)
    await host.run(ticket, FakeAdapter("call-lk"))
    ctx = ran.context
    assert ctx is not None and ctx.agent.name == "Call control test agent"
    assert pool.sessions.loaded == ["call-lk"] and pool.ledger.written == []
    assert ran.log_id == "call-lk"
