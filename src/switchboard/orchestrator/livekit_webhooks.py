"""LiveKit webhook verification, the decision whether an event needs an agent, and the room jobs
that bring one (for inbound SIP callers and for outbound calls alike)."""

from __future__ import annotations

from dataclasses import dataclass

import jwt
import redis.asyncio as redis
from livekit import api as livekit_api
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.webhook import WebhookEvent
from loguru import logger

from switchboard.dispatch import keys
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.models import CallStatus, Job, SipAttributes
from switchboard.dispatch.queue import JobQueue
from switchboard.settings import Settings
from switchboard.telephony.livekit import BRIDGED_METADATA, is_call_room
from switchboard.telephony.livekit_setup import UNASSIGNED_PREFIX
from switchboard.telephony.livekit_sip import LIVEKIT_ERRORS, close_room, describe, livekit_client


class WebhookRejected(Exception):
    """The webhook is unsigned, forged, expired or its body was altered."""


# How far past its expiry a token still verifies (livekit-api's default, which we use).
TOKEN_LEEWAY_SECS = int(livekit_api.access_token.DEFAULT_LEEWAY.total_seconds())


@dataclass(frozen=True)
class VerifiedWebhook:
    """A webhook whose signature, validity window and body hash all checked out."""

    event: WebhookEvent
    expires_at: float  # the token's exp: until then (plus the leeway) it could be replayed


def verify_livekit_webhook(
    body: bytes, authorization: str | None, api_key: str, api_secret: str
) -> VerifiedWebhook:
    """Check the JWT (signature, validity window, body sha256) with livekit-api."""
    if not authorization:
        raise WebhookRejected("missing Authorization header")
    receiver = livekit_api.WebhookReceiver(livekit_api.TokenVerifier(api_key, api_secret))
    try:
        event = receiver.receive(body.decode("utf-8"), authorization)
        # Verified above (and livekit-api requires exp): only its expiry is read here.
        expires_at = float(jwt.decode(authorization, options={"verify_signature": False})["exp"])
    except Exception as e:  # the SDK raises bare Exceptions and jwt errors alike
        raise WebhookRejected(str(e) or e.__class__.__name__) from e
    return VerifiedWebhook(event, expires_at)


async def first_delivery(client: redis.Redis, webhook: VerifiedWebhook, now: float) -> bool:
    """Remember the event's id for as long as its token verifies; False if it was seen.

    LiveKit's server gives every webhook a fresh id (livekit-server ``pkg/telemetry/events.go``,
    ``NotifyEvent``: ``event.Id = utils.NewGuid("EV_")``) and its retries resend the same body
    under the same token, so the id is what tells a replay from a new event. An event without
    one did not come from a LiveKit server; the caller refuses it rather than letting a replay
    of it through.
    """
    assert webhook.event.id
    remember_secs = max(1, int(webhook.expires_at - now) + TOKEN_LEEWAY_SECS + 1)
    key = keys.webhook_event(webhook.event.id)
    return bool(await client.set(key, "1", nx=True, ex=remember_secs))


@dataclass(frozen=True)
class AgentNeeded:
    room: str
    caller: str | None
    sip: SipAttributes


def call_to_refuse(event) -> str | None:
    """A SIP caller joined an ``unassigned-…`` room (a number no agent answers, put there by the
    catch-all dispatch rule of :mod:`switchboard.telephony.livekit_setup`): the room to close,
    which ends the unanswered call with a final SIP response."""
    if event.event != "participant_joined" or event.participant.kind != ParticipantInfo.Kind.SIP:
        return None
    return event.room.name if event.room.name.startswith(UNASSIGNED_PREFIX) else None


async def close_call_room(settings: Settings, room: str, why: str) -> None:
    """Close ``room``, hanging up the phones in it (an unassigned call's INVITE gets ``486``)."""
    try:
        async with livekit_client(settings) as lk:
            await close_room(lk, room)
        logger.info(f"room {room}: {why}; room closed")
    except LIVEKIT_ERRORS as e:
        logger.warning(f"room {room}: could not close the room ({why}): {describe(e)}")


def bridge_ended(event) -> str | None:
    """A phone left a room a warm transfer bridged (the agent is gone): the room to close, so
    the other phone is hung up rather than left listening to nobody."""
    if event.event != "participant_left" or event.participant.kind != ParticipantInfo.Kind.SIP:
        return None
    if not is_call_room(event.room.name) or event.room.metadata != BRIDGED_METADATA:
        return None
    return event.room.name


def caller_gone(event) -> str | None:
    """A ``call-*`` room whose caller left (or that closed): its job, if not yet claimed, is void."""
    if not is_call_room(event.room.name):
        return None
    if event.event == "room_finished":
        return event.room.name
    if event.event == "participant_left" and event.participant.kind == ParticipantInfo.Kind.SIP:
        return event.room.name
    return None


def agent_needed(event: WebhookEvent) -> AgentNeeded | None:
    """A SIP caller joined a ``call-*`` room: that room needs an agent."""
    if event.event != "participant_joined":
        return None
    if not is_call_room(event.room.name):
        return None
    participant = event.participant
    if participant.kind != ParticipantInfo.Kind.SIP:
        return None
    attributes = participant.attributes
    caller = attributes.get("sip.phoneNumber") or participant.identity or None
    sip = SipAttributes(
        trunk_id=attributes.get("sip.trunkID") or None,
        trunk_phone_number=attributes.get("sip.trunkPhoneNumber") or None,
        phone_number=attributes.get("sip.phoneNumber") or None,
    )
    return AgentNeeded(room=event.room.name, caller=caller, sip=sip)


class QueuedRoomJobs:
    """Room jobs on the ``sb:jobs`` queue, at most one agent per room (``sb:room:{name}``)."""

    def __init__(self, client: redis.Redis, queue: JobQueue, ledger: CallLedger, ttl_secs: int):
        self._redis = client
        self._queue = queue
        self._ledger = ledger
        self._ttl = ttl_secs

    async def dispatch(self, job: Job, **state: str) -> bool:
        assert job.room is not None
        if not await self._redis.set(keys.room(job.room), job.call_id, nx=True, ex=self._ttl):
            return False
        fields = self._ledger.state(CallStatus.QUEUED, room=job.room, job_id=job.job_id, **state)
        await self._queue.enqueue(job, fields, self._ttl)
        logger.info(f"{job.call_id}: agent job queued for room {job.room}")
        return True

    async def caller_left(self, room: str) -> None:
        """Void the queued job of a room whose caller is gone. A worker claiming it later would
        join the room by name, and LiveKit creates a room on join: the agent would sit in an
        empty room it had just made, holding a slot, until its idle timeout."""
        call_id = await self._redis.get(keys.room(room))
        if call_id is None:
            return
        if (await self._ledger.get(call_id)).get("status") == CallStatus.QUEUED.value:
            await self._ledger.record(call_id, CallStatus.FAILED, reason="caller_left")
            logger.info(f"{call_id}: the caller left room {room} before an agent joined")
        await self._redis.delete(keys.room(room))

    async def release(self, job: Job, reason: str) -> None:
        # A worker that has not claimed the job finds the call finished and drops it.
        await self._ledger.record(job.call_id, CallStatus.FAILED, reason=reason)
        if job.room is not None:
            await self._redis.delete(keys.room(job.room))
        logger.info(f"{job.call_id}: agent job released ({reason})")
