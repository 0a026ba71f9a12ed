"""What a worker does with each kind of job."""

from __future__ import annotations

import asyncio

from loguru import logger

from switchboard.agent.config import AgentConfig
from switchboard.agent.directory import AgentDirectory, CallRoute
from switchboard.dispatch.models import Job, JobKind, SipAttributes
from switchboard.dispatch.sessions import CallSessions
from switchboard.records.archive import CallArchive
from switchboard.settings import Settings
from switchboard.telephony.livekit import LiveKitRoomAdapter
from switchboard.worker.calls import CallRecord, CallRegistry


def job_agent(job: Job, agents: AgentDirectory) -> AgentConfig:
    """The agent for a room job, chosen as for every call: by name, number, trunk or room."""
    sip = job.sip
    return agents.choose(
        CallRoute(
            agent=job.agent,
            dialed=sip.trunk_phone_number if sip else None,
            trunk=sip.trunk_id if sip else None,
            room=job.room,
        )
    )


def job_numbers(job: Job) -> tuple[str, str]:
    """The call's (from, to) numbers for its record. An inbound caller's job names the caller
    (``sip.phoneNumber``) who dialed our trunk number; an outbound call's job names none: we
    called ``sip.phoneNumber`` from ``sip.trunkPhoneNumber``."""
    sip = job.sip or SipAttributes()
    ours, theirs = sip.trunk_phone_number or "", sip.phone_number or ""
    return (job.caller or theirs, ours) if job.caller else (ours, theirs)


async def run_livekit_job(
    job: Job,
    agents: AgentDirectory,
    settings: Settings,
    calls: CallRegistry,
    archive: CallArchive | None = None,
    sessions: CallSessions | None = None,
    worker_id: str = "",
) -> CallRecord:
    """Join the job's room through Pipecat's LiveKit transport and run the agent there.

    The job's slot and queue entry are the service's to release, so no slot is passed. A job
    redelivered after its worker died finds the call's session and carries the conversation on.
    """
    from switchboard.worker.runner import run_call

    assert job.room is not None
    resumed = await sessions.load(job.call_id) if sessions is not None else None
    agent = (resumed and agents.by_name(resumed.agent)) or job_agent(job, agents)
    caller, dialed = job_numbers(job)
    adapter = LiveKitRoomAdapter(settings, job.room, job.call_id, caller=caller, dialed=dialed)
    return await run_call(
        adapter, agent, settings, calls, archive=archive, sessions=sessions, worker_id=worker_id,
        resumed=resumed,
    )


async def run_test_job(job: Job) -> None:
    """Hold a slot like a call would: for drills (crash, drain) and dispatch benchmarks."""
    logger.info(f"test job {job.job_id}: holding a slot for {job.duration_secs} s")
    await asyncio.sleep(job.duration_secs)


async def run_job(
    job: Job,
    agents: AgentDirectory,
    settings: Settings,
    calls: CallRegistry,
    archive: CallArchive | None = None,
    sessions: CallSessions | None = None,
    worker_id: str = "",
) -> CallRecord | None:
    """Run a job; a call's record (already counted by the call runner), None for other jobs."""
    if job.kind is JobKind.LIVEKIT_ROOM:
        return await run_livekit_job(job, agents, settings, calls, archive, sessions, worker_id)
    if job.kind is JobKind.TEST:
        await run_test_job(job)
    return None
