"""Outbound calls over LiveKit: the agent's room job first, then ``CreateSIPParticipant``.

The job for a new ``call-*`` room is queued before the phone rings, so a worker is joining the
room while the callee's phone rings and the agent is there when they pick up. The dial waits
until the callee answers (``wait_until_answered``, at most ``outbound_ring_secs``): the request
returns the answered call, or an error that says why not; a call that failed to dial has its
job released (marked failed, so a worker that has not claimed it drops it) and its room closed
(so an agent already in it is disconnected).
"""

from __future__ import annotations

from typing import Protocol

from fastapi import HTTPException
from loguru import logger

from switchboard.call_ids import new_call_id
from switchboard.dispatch.models import Job, JobKind, SipAttributes
from switchboard.errors import ConfigError
from switchboard.observability import metrics
from switchboard.settings import Settings
from switchboard.telephony.base import TransferOutcome
from switchboard.telephony.livekit_sip import (
    LIVEKIT_ERRORS,
    close_room,
    describe,
    dial,
    dial_outcome,
    livekit_client,
    sip_status,
)

AGENT_ATTRIBUTE = "switchboard.agent"
CALL_ATTRIBUTE = "switchboard.call_id"
# A callee who did not answer is the far end timing out (504); anything else the carrier or
# LiveKit refused (502). Both are 5xx, so ``switchboard dial --csv`` retries them.
_HTTP_STATUS = {TransferOutcome.NO_ANSWER: 504}


class RoomJobs(Protocol):
    """Where room jobs go: the orchestrator's queue (:mod:`switchboard.orchestrator.livekit_webhooks`)."""

    async def dispatch(self, job: Job, **state: str) -> bool:
        """Queue the job unless its room has an agent already; True if queued."""
        ...

    async def release(self, job: Job, reason: str) -> None:
        """Give up the job of a call that will not happen."""
        ...


def outbound_job(settings: Settings, to: str, caller_id: str | None, agent: str | None) -> Job:
    """The room job of an outbound call: its room is named after the call."""
    call_id = new_call_id()
    sip = SipAttributes(
        trunk_id=settings.livekit_outbound_trunk, trunk_phone_number=caller_id, phone_number=to
    )
    return Job(call_id=call_id, kind=JobKind.LIVEKIT_ROOM, room=call_id, agent=agent, sip=sip)


async def place_livekit_call(
    settings: Settings,
    rooms: RoomJobs | None,
    *,
    to: str,
    caller_id: str | None,
    agent: str | None,
) -> dict:
    """Place one outbound call through LiveKit; HTTPException says why it did not happen."""
    trunk = settings.livekit_outbound_trunk
    if rooms is None:
        raise HTTPException(503, "LiveKit outbound calls are placed by an orchestrator (a pool)")
    if trunk is None:
        raise HTTPException(503, "LiveKit outbound calls need SWITCHBOARD_LIVEKIT_OUTBOUND_TRUNK")
    try:
        lk = livekit_client(settings)
    except ConfigError as e:
        raise HTTPException(503, f"LiveKit outbound calls: {e}") from e
    job = outbound_job(settings, to, caller_id, agent)
    assert job.room is not None
    await rooms.dispatch(job, direction="outbound", ingress="livekit")
    attributes = {CALL_ATTRIBUTE: job.call_id} | ({AGENT_ATTRIBUTE: agent} if agent else {})
    async with lk:
        try:
            info = await dial(
                lk,
                trunk=trunk,
                to=to,
                room=job.room,
                identity=f"sip_{to}",
                ring_secs=settings.outbound_ring_secs,
                attributes=attributes,
                caller_id=caller_id,
            )
        except LIVEKIT_ERRORS as e:
            outcome = dial_outcome(e)
            await rooms.release(job, reason=f"dial_{outcome.value}")
            try:
                await close_room(lk, job.room)
            except LIVEKIT_ERRORS as close_error:
                logger.warning(
                    f"{job.call_id}: could not close room {job.room}: {describe(close_error)}"
                )
            metrics.OUTBOUND_CALLS.labels(result=outcome.value).inc()
            logger.info(
                f"{job.call_id}: LiveKit outbound call to {to[:-4]}****: {outcome.value} ({describe(e)})"
            )
            raise HTTPException(
                _HTTP_STATUS.get(outcome, 502),
                {
                    "error": f"LiveKit could not place the call: {describe(e)}",
                    "outcome": outcome.value,
                    "sip_status_code": sip_status(e),
                    "call_id": job.call_id,
                },
            ) from e
    metrics.OUTBOUND_CALLS.labels(result="placed").inc()
    logger.info(f"{job.call_id}: LiveKit outbound call to {to[:-4]}**** answered, agent {agent}")
    return {
        "call_sid": info.sip_call_id,
        "call_id": job.call_id,
        "room": job.room,
        "status": "answered",
        "agent": agent,
        "ingress": "livekit",
    }
