"""A LiveKit room as a call: the agent's access token and Pipecat's LiveKit transport."""

from __future__ import annotations

import datetime
import re

from livekit import api as livekit_api
from pipecat.transports.base_transport import BaseTransport

from switchboard.errors import ConfigError, SwitchboardError
from switchboard.settings import Settings
from switchboard.telephony.base import CallAdapter, CallControl, CallIds, NoCallControl

ROOM_PATTERN = re.compile(r"^call-[A-Za-z0-9_\-]{1,120}$")
AGENT_TOKEN_TTL = datetime.timedelta(hours=2)
OUT_SAMPLE_RATE = 16000


def is_call_room(name: str) -> bool:
    """Rooms the dispatcher answers: ``call-{id}``, as the SIP dispatch rule creates them."""
    return bool(ROOM_PATTERN.match(name))


def agent_room_token(settings: Settings, room: str, identity: str) -> str:
    """A LiveKit access token letting the agent join exactly one call room."""
    if not (settings.livekit_api_key and settings.livekit_api_secret):
        raise ConfigError("LIVEKIT_API_KEY and LIVEKIT_API_SECRET are needed to join LiveKit rooms")
    if not is_call_room(room):
        raise SwitchboardError(f"refusing to join {room!r}: not a call-* room")
    return (
        livekit_api.AccessToken(
            settings.livekit_api_key, settings.livekit_api_secret.get_secret_value()
        )
        .with_identity(identity)
        .with_name("Switchboard agent")
        .with_kind("agent")
        .with_ttl(AGENT_TOKEN_TTL)
        .with_grants(
            livekit_api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
            )
        )
        .to_jwt()
    )


class LiveKitRoomAdapter(CallAdapter):
    """The agent joining one ``call-*`` room, where the SIP caller already is."""

    ingress = "livekit"
    out_sample_rate = OUT_SAMPLE_RATE

    def __init__(
        self, settings: Settings, room: str, call_id: str, *, control: CallControl | None = None
    ):
        if not settings.livekit_url:
            raise ConfigError("LIVEKIT_URL is needed to join LiveKit rooms")
        self.ids = CallIds(call_sid=call_id, stream_sid=room, call_id=call_id)
        self.control = control or NoCallControl()
        self._url = settings.livekit_url
        self._room = room
        self._token = agent_room_token(settings, room, identity=f"agent-{call_id}")
        self._transport: BaseTransport | None = None

    def transport(self) -> BaseTransport:
        if self._transport is None:
            from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport

            self._transport = LiveKitTransport(
                url=self._url,
                token=self._token,
                room_name=self._room,
                params=LiveKitParams(audio_in_enabled=True, audio_out_enabled=True),
            )
        return self._transport
