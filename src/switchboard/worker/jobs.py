"""What a worker does with each kind of job."""

from __future__ import annotations

import asyncio

from loguru import logger

from switchboard.agent.config import AgentConfig
from switchboard.agent.directory import AgentDirectory, CallRoute
from switchboard.call.host import CallHost
from switchboard.call.record import CallRecord
from switchboard.call.ticket import CallTicket
from switchboard.dispatch.models import Job, JobKind, SipAttributes
from switchboard.telephony.livekit import LiveKitRoomAdapter


def job_route(job: Job) -> CallRoute:
    """What a room job says about whom it is for: a name, a number, a trunk or the room."""
    sip = job.sip
    return CallRoute(
        agent=job.agent,
        dialed=sip.trunk_phone_number if sip else None,
        trunk=sip.trunk_id if sip else None,
        room=job.room,
    )


def job_agent(job: Job, agents: AgentDirectory) -> AgentConfig:
    """The agent for a room job, chosen as for every call."""
    return agents.choose(job_route(job))


def job_numbers(job: Job) -> tuple[str, str]:
    """The call's (from, to) numbers for its record. An inbound caller's job names the caller
    (``sip.phoneNumber``) who dialed our trunk number; an outbound call's job names none: we
    called ``sip.phoneNumber`` from ``sip.trunkPhoneNumber``."""
    sip = job.sip or SipAttributes()
    ours, theirs = sip.trunk_phone_number or "", sip.phone_number or ""
    return (job.caller or theirs, ours) if job.caller else (ours, theirs)


async def run_livekit_job(job: Job, host: CallHost) -> CallRecord:
    """Join the job's room through Pipecat's LiveKit transport and run the agent there.

    The job's slot, queue entry and RUNNING state are the service's (written when it claimed
    the job), so no slot is passed. A job redelivered after its worker died finds the call's
    session and carries the conversation on.
    """
    assert job.room is not None
    caller, dialed = job_numbers(job)
    adapter = LiveKitRoomAdapter(host.settings, job.room, job.call_id, caller=caller, dialed=dialed)
    ticket = CallTicket(
        call_id=job.call_id, route=job_route(job), movable=True, resumes=True, mark_running=False
    )
    return await host.run(ticket, adapter)


async def run_test_job(job: Job) -> None:
    """Hold a slot like a call would: for drills (crash, drain) and dispatch benchmarks."""
    logger.info(f"test job {job.job_id}: holding a slot for {job.duration_secs} s")
    await asyncio.sleep(job.duration_secs)


async def run_job(job: Job, host: CallHost) -> CallRecord | None:
    """Run a job; a call's record (already counted by the call runner), None for other jobs."""
    if job.kind is JobKind.LIVEKIT_ROOM:
        return await run_livekit_job(job, host)
    if job.kind is JobKind.TEST:
        await run_test_job(job)
    return None
