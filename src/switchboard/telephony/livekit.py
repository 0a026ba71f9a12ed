"""A LiveKit room as a call: the agent's access token, Pipecat's LiveKit transport, and SIP
call control through ``livekit-api`` (transfer by SIP REFER, hang up by closing the room)."""

from __future__ import annotations

import datetime
import re

import aiohttp
from livekit import api as livekit_api
from livekit.protocol import sip as sip_proto
from loguru import logger
from pipecat.transports.base_transport import BaseTransport

from switchboard.agent.config import valid_transfer_target
from switchboard.errors import ConfigError, SwitchboardError
from switchboard.settings import Settings
from switchboard.telephony.base import CallAdapter, CallControl, CallIds, TransferOutcome

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


def transfer_uri(target: str) -> str:
    """What ``TransferSIPParticipant`` wants: ``tel:+1...`` for numbers, SIP URIs as they are."""
    return target if target.startswith(("sip:", "sips:")) else f"tel:{target}"


class LiveKitCallControl(CallControl):
    """The SIP caller in one LiveKit room, through the LiveKit server API."""

    def __init__(self, settings: Settings, room: str):
        self._settings = settings
        self._room = room

    def _api(self) -> livekit_api.LiveKitAPI:
        assert self._settings.livekit_api_secret is not None
        return livekit_api.LiveKitAPI(
            self._settings.livekit_url,
            self._settings.livekit_api_key,
            self._settings.livekit_api_secret.get_secret_value(),
            failover=False,
        )

    async def _sip_participant(self, lk: livekit_api.LiveKitAPI) -> str | None:
        listed = await lk.room.list_participants(
            livekit_api.ListParticipantsRequest(room=self._room)
        )
        sip = livekit_api.ParticipantInfo.Kind.SIP
        return next((p.identity for p in listed.participants if p.kind == sip), None)

    async def transfer(self, target: str) -> TransferOutcome:
        if not valid_transfer_target(target):
            return TransferOutcome.INVALID_TARGET
        try:
            async with self._api() as lk:
                identity = await self._sip_participant(lk)
                if identity is None:
                    logger.warning(f"room {self._room}: no SIP participant to transfer")
                    return TransferOutcome.FAILED
                response = await lk.sip.transfer_sip_participant(
                    livekit_api.TransferSIPParticipantRequest(
                        room_name=self._room,
                        participant_identity=identity,
                        transfer_to=transfer_uri(target),
                        play_dialtone=False,
                        ringing_timeout=_duration(self._settings.transfer_ring_secs),
                    )
                )
        except (livekit_api.TwirpError, aiohttp.ClientError, TimeoutError, OSError) as e:
            logger.warning(f"room {self._room}: transfer to {target} failed: {e!r}")
            return TransferOutcome.FAILED
        ok = response.status != sip_proto.STS_TRANSFER_FAILED
        return TransferOutcome.ANSWERED if ok else TransferOutcome.FAILED

    async def hang_up(self) -> None:
        """Leaving the room would leave the caller on hold: close the room, which hangs up SIP."""
        try:
            async with self._api() as lk:
                await lk.room.delete_room(livekit_api.DeleteRoomRequest(room=self._room))
        except (livekit_api.TwirpError, aiohttp.ClientError, TimeoutError, OSError) as e:
            logger.warning(f"room {self._room}: could not close the room: {e!r}")


def _duration(secs: int):
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=secs)


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
        self.control = control or LiveKitCallControl(settings, room)
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
