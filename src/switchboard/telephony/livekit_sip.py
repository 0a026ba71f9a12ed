"""LiveKit SIP dialing through ``livekit-api``: a phone joining a room by ``CreateSIPParticipant``,
and what a failed dial means (busy, no answer, failed).

With ``wait_until_answered`` LiveKit answers the request only once the callee picks up, or with
an error when they do not: a SIP final response (486 Busy Here, 480 Temporarily Unavailable...)
comes back as a Twirp error carrying ``sip_status_code`` (the SDK raises ``SipCallError``); its
own ring timeout running out comes back as ``canceled`` "sip request timed out", with no SIP
status (livekit/sip ``pkg/sip/outbound.go``, ``sipResponse``).
"""

from __future__ import annotations

import aiohttp
from google.protobuf.duration_pb2 import Duration
from livekit import api as livekit_api

from switchboard.errors import ConfigError
from switchboard.settings import Settings
from switchboard.telephony.base import TransferOutcome

# What a LiveKit API call may raise: refused (Twirp), unreachable, or too slow.
LIVEKIT_ERRORS = (livekit_api.TwirpError, aiohttp.ClientError, TimeoutError, OSError)
_BUSY = frozenset({486, 600, 603})  # busy here, busy everywhere, declined
_NO_ANSWER = frozenset({408, 480, 487})  # request timeout, temporarily unavailable, terminated
_RING_TIMEOUT_CODES = frozenset(
    {livekit_api.TwirpErrorCode.CANCELED, livekit_api.TwirpErrorCode.DEADLINE_EXCEEDED}
)


def livekit_client(settings: Settings) -> livekit_api.LiveKitAPI:
    """The server API at ``LIVEKIT_URL``; one region, so a test's fake is never failed over."""
    if not (settings.livekit_url and settings.livekit_api_key and settings.livekit_api_secret):
        raise ConfigError("LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are needed")
    return livekit_api.LiveKitAPI(
        settings.livekit_url,
        settings.livekit_api_key,
        settings.livekit_api_secret.get_secret_value(),
        failover=False,
    )


def duration(secs: int) -> Duration:
    return Duration(seconds=secs)


def dial_outcome(error: BaseException) -> TransferOutcome:
    """How a ``CreateSIPParticipant`` that raised ``error`` ended for the person called."""
    if isinstance(error, livekit_api.SipCallError) and error.sip_status_code is not None:
        if error.sip_status_code in _BUSY:
            return TransferOutcome.BUSY
        if error.sip_status_code in _NO_ANSWER:
            return TransferOutcome.NO_ANSWER
        return TransferOutcome.FAILED
    if isinstance(error, livekit_api.TwirpError):
        return (
            TransferOutcome.NO_ANSWER
            if error.code in _RING_TIMEOUT_CODES
            else TransferOutcome.FAILED
        )
    if isinstance(error, TimeoutError):
        return TransferOutcome.NO_ANSWER  # the SDK's request timeout outlasts the ringing
    return TransferOutcome.FAILED


def sip_status(error: BaseException) -> int | None:
    """The SIP response code of a failed dial, when the far end gave one."""
    return error.sip_status_code if isinstance(error, livekit_api.SipCallError) else None


def describe(error: BaseException) -> str:
    """A short line for logs and HTTP errors."""
    if isinstance(error, livekit_api.TwirpError):
        return (
            str(error)
            if isinstance(error, livekit_api.SipCallError)
            else f"{error.code}: {error.message}"
        )
    return type(error).__name__


async def dial(
    lk: livekit_api.LiveKitAPI,
    *,
    trunk: str,
    to: str,
    room: str,
    identity: str,
    ring_secs: int,
    attributes: dict[str, str],
    name: str = "",
    caller_id: str | None = None,
) -> livekit_api.SIPParticipantInfo:
    """Ring ``to`` through ``trunk`` into ``room`` and return once they answer; raises one of
    :data:`LIVEKIT_ERRORS` when they do not (see :func:`dial_outcome`)."""
    return await lk.sip.create_sip_participant(
        livekit_api.CreateSIPParticipantRequest(
            sip_trunk_id=trunk,
            sip_call_to=to,
            sip_number=caller_id or "",
            room_name=room,
            participant_identity=identity,
            participant_name=name,
            participant_attributes=attributes,
            ringing_timeout=duration(ring_secs),
            wait_until_answered=True,
        )
    )


async def close_room(lk: livekit_api.LiveKitAPI, room: str) -> None:
    """Delete ``room``, hanging up any phone in it; a room already gone is fine."""
    try:
        await lk.room.delete_room(livekit_api.DeleteRoomRequest(room=room))
    except livekit_api.TwirpError as e:
        if e.code != livekit_api.TwirpErrorCode.NOT_FOUND:
            raise
