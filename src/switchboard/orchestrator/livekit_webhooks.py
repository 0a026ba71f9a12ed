"""LiveKit webhook verification and the decision whether an event needs an agent."""

from __future__ import annotations

from dataclasses import dataclass

from livekit import api as livekit_api
from livekit.protocol.models import ParticipantInfo

from switchboard.telephony.livekit import is_call_room


class WebhookRejected(Exception):
    """The webhook is unsigned, forged, expired or its body was altered."""


def verify_livekit_webhook(body: bytes, authorization: str | None, api_key: str, api_secret: str):
    """Check the JWT (signature, validity window, body sha256) with livekit-api; return the event."""
    if not authorization:
        raise WebhookRejected("missing Authorization header")
    receiver = livekit_api.WebhookReceiver(livekit_api.TokenVerifier(api_key, api_secret))
    try:
        return receiver.receive(body.decode("utf-8"), authorization)
    except Exception as e:  # the SDK raises bare Exceptions and jwt errors alike
        raise WebhookRejected(str(e) or e.__class__.__name__) from e


@dataclass(frozen=True)
class AgentNeeded:
    room: str
    caller: str | None


def agent_needed(event) -> AgentNeeded | None:
    """A SIP caller joined a ``call-*`` room: that room needs an agent."""
    if event.event != "participant_joined":
        return None
    if not is_call_room(event.room.name):
        return None
    participant = event.participant
    if participant.kind != ParticipantInfo.Kind.SIP:
        return None
    caller = participant.attributes.get("sip.phoneNumber") or participant.identity or None
    return AgentNeeded(room=event.room.name, caller=caller)
