"""A LiveKit room as a call: the agent's access token, Pipecat's LiveKit transport, and SIP
call control through ``livekit-api`` (cold transfer by SIP REFER, warm transfer through a consult
room, hang up by closing the room)."""

from __future__ import annotations

import asyncio
import datetime
import re
from typing import TYPE_CHECKING

from livekit import api as livekit_api
from livekit.protocol import sip as sip_proto
from loguru import logger
from pipecat.transports.base_transport import BaseTransport

from switchboard.agent.config import valid_transfer_target
from switchboard.errors import ConfigError, SwitchboardError
from switchboard.settings import Settings
from switchboard.telephony.base import (
    CallAdapter,
    CallControl,
    CallIds,
    TransferOutcome,
    UnsupportedOperation,
)
from switchboard.telephony.livekit_sip import (
    LIVEKIT_ERRORS,
    close_room,
    describe,
    dial,
    dial_outcome,
    duration,
    livekit_client,
)

if TYPE_CHECKING:
    from switchboard.call.conversation.pipeline import CallPipeline

# LiveKit SIP's individual dispatch rule names a room ``{prefix}_{caller}_{random}``, and the
# caller is an E.164 number: with the prefix ``call-`` that is ``call-_+15105550100_6jgXbZsZqcnm``,
# so ``+`` belongs here (a name without it was never given an agent by the real server).
ROOM_PATTERN = re.compile(r"^call-[A-Za-z0-9_+\-]{1,120}$")
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
        return livekit_client(self._settings)

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
                        ringing_timeout=duration(self._settings.transfer_ring_secs),
                    )
                )
        except LIVEKIT_ERRORS as e:
            # LiveKit SIP waits for the REFER's outcome: a busy or unanswered person is said as
            # such, and the caller stays with the agent.
            outcome = dial_outcome(e)
            logger.info(f"room {self._room}: transfer to {target}: {outcome.value} ({describe(e)})")
            return outcome
        ok = response.status != sip_proto.STS_TRANSFER_FAILED
        return TransferOutcome.ANSWERED if ok else TransferOutcome.FAILED

    async def warm_transfer(self, target: str, summary: str) -> TransferOutcome:
        """Ring the person into a consult room, then move them into the caller's room.

        ``CreateSIPParticipant`` with ``wait_until_answered`` dials ``target`` through the
        outbound trunk into ``consult-{id}`` (not a ``call-*`` room, so no agent is dispatched
        to it) and returns once they answer, or fails with the SIP error that says why not
        (busy, no answer within ``transfer_ring_secs``). An answered person is then moved into
        the caller's room with ``MoveParticipant`` (LiveKit Cloud and Private Cloud; a server
        without it refuses the move, which is a FAILED transfer and hangs the person up): the
        agent leaves, and the caller and the person stay together in the caller's room. A
        transfer through the caller's own SIP leg (REFER) could not bridge a consult first.

        The summary is not spoken: saying it in the consult room would need a second agent
        pipeline there. It is only set as the person's participant attribute
        ``switchboard.summary`` (with ``switchboard.caller_room``): visible to LiveKit clients
        and tools watching the rooms, never heard on the person's phone.
        """
        trunk = self._settings.livekit_outbound_trunk
        if trunk is None:
            raise UnsupportedOperation(
                "warm transfers over LiveKit need SWITCHBOARD_LIVEKIT_OUTBOUND_TRUNK"
            )
        if not valid_transfer_target(target):
            return TransferOutcome.INVALID_TARGET
        if not target.startswith("+"):
            raise UnsupportedOperation(
                "LiveKit warm transfers dial numbers through the trunk, not SIP URIs"
            )
        consult = f"consult-{self._room.removeprefix('call-')}"
        identity = f"transfer_{target}"
        try:
            async with self._api() as lk:
                try:
                    await dial(
                        lk,
                        trunk=trunk,
                        to=target,
                        room=consult,
                        identity=identity,
                        name="Transfer",
                        ring_secs=self._settings.transfer_ring_secs,
                        attributes={
                            "switchboard.summary": summary,
                            "switchboard.caller_room": self._room,
                        },
                    )
                except LIVEKIT_ERRORS as e:
                    outcome = dial_outcome(e)
                    logger.info(
                        f"room {self._room}: warm transfer to {target}: {outcome.value} ({describe(e)})"
                    )
                    await _quietly_close(lk, consult)
                    return outcome
                try:
                    await lk.room.move_participant(
                        livekit_api.MoveParticipantRequest(
                            room=consult, identity=identity, destination_room=self._room
                        )
                    )
                except LIVEKIT_ERRORS as e:
                    logger.warning(f"room {self._room}: could not bring {target} in: {describe(e)}")
                    await _quietly_close(lk, consult)
                    return TransferOutcome.FAILED
        except LIVEKIT_ERRORS as e:
            logger.warning(f"room {self._room}: warm transfer to {target} failed: {describe(e)}")
            return TransferOutcome.FAILED
        logger.info(f"room {self._room}: {target} answered and joined the caller")
        return TransferOutcome.ANSWERED

    async def hang_up(self) -> None:
        """Leaving the room would leave the caller on hold: close the room, which hangs up SIP."""
        try:
            async with self._api() as lk:
                await lk.room.delete_room(livekit_api.DeleteRoomRequest(room=self._room))
        except LIVEKIT_ERRORS as e:
            logger.warning(f"room {self._room}: could not close the room: {e!r}")


async def _quietly_close(lk: livekit_api.LiveKitAPI, room: str) -> None:
    """Hang up whoever is still in a consult room (the ringing leg of an unanswered transfer)."""
    try:
        await close_room(lk, room)
    except LIVEKIT_ERRORS as e:
        logger.warning(f"could not close consult room {room}: {describe(e)}")


_ANSWERED = "active"  # the SIP participant's sip.callStatus once its phone has answered
# LiveKit creates a room when someone joins it: an agent that joins the room of a call already
# over (an outbound dial refused before the worker got there) makes a new, empty one and would
# wait there for its idle timeout. Nobody in the room this long after joining: no call.
EMPTY_ROOM_SECS = 10.0


def _call_room_transport():
    """Pipecat's LiveKit transport, with a SIP participant counted as connected (greeted, and
    the call counted as one) only once its phone has answered.

    LiveKit SIP puts an outbound callee in the room as soon as it starts dialing, with
    ``sip.callStatus`` going ``dialing`` → ``ringing`` → ``active``: Pipecat's transport reports
    it connected at once, so the agent greeted a phone that was still ringing (the greeting was
    lost) and an unanswered call ran and was recorded as a completed one.
    """
    from pipecat.transports.livekit.transport import LiveKitTransport

    class CallRoomTransport(LiveKitTransport):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.answered = False
            self.anyone_came = False  # answered or not
            self._ringing: set[str] = set()
            self._tasks: set[asyncio.Task] = set()
            self._watching = False

        async def _on_participant_connected(self, participant_id: str) -> None:
            self.anyone_came = True
            room = self._client.room
            participant = room.remote_participants.get(participant_id)
            status = participant.attributes.get("sip.callStatus") if participant else None
            if status not in (None, _ANSWERED):
                self._ringing.add(participant_id)
                if not self._watching:
                    room.on("participant_attributes_changed")(self._attributes_changed)
                    self._watching = True
                logger.info(f"{participant_id} is {status}: waiting for the answer")
                return
            self.answered = True
            await super()._on_participant_connected(participant_id)

        def _attributes_changed(self, _changed: dict, participant) -> None:
            if participant.identity not in self._ringing:
                return
            if participant.attributes.get("sip.callStatus") == _ANSWERED:
                self._ringing.discard(participant.identity)
                task = asyncio.get_running_loop().create_task(
                    self._on_participant_connected(participant.identity)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    return CallRoomTransport


class LiveKitRoomAdapter(CallAdapter):
    """The agent joining one ``call-*`` room, where the SIP caller already is."""

    ingress = "livekit"
    out_sample_rate = OUT_SAMPLE_RATE

    def __init__(
        self,
        settings: Settings,
        room: str,
        call_id: str,
        *,
        control: CallControl | None = None,
        caller: str = "",
        dialed: str = "",
    ):
        if not settings.livekit_url:
            raise ConfigError("LIVEKIT_URL is needed to join LiveKit rooms")
        # caller/dialed are the call record's from/to numbers (the SIP participant's attributes).
        self.ids = CallIds(
            call_sid=call_id, stream_sid=room, call_id=call_id, caller=caller, dialed=dialed
        )
        self.control = control or LiveKitCallControl(settings, room)
        self._url = settings.livekit_url
        self._room = room
        self._token = agent_room_token(settings, room, identity=f"agent-{call_id}")
        self._transport: BaseTransport | None = None
        self._empty_room_watch: asyncio.Task | None = None

    def transport(self) -> BaseTransport:
        if self._transport is None:
            from pipecat.transports.livekit.transport import LiveKitParams

            self._transport = _call_room_transport()(
                url=self._url,
                token=self._token,
                room_name=self._room,
                params=LiveKitParams(audio_in_enabled=True, audio_out_enabled=True),
            )
        return self._transport

    def attach(self, call: CallPipeline) -> None:
        """End the call when the room closes under the agent (the room of an outbound call
        that failed to dial is closed): the pipeline already ends when the phone leaves, but a
        closed room never reports that, and nobody would be left to talk to."""
        transport = self.transport()

        @transport.event_handler("on_connected")
        async def _connected(_transport) -> None:
            self._empty_room_watch = asyncio.create_task(self._leave_if_empty(call))

        @transport.event_handler("on_disconnected")
        async def _disconnected(_transport) -> None:
            logger.info(f"room {self._room}: disconnected from the room; ending the call")
            await call.worker.cancel()

    async def _leave_if_empty(self, call: CallPipeline) -> None:
        await asyncio.sleep(EMPTY_ROOM_SECS)
        if not getattr(self._transport, "anyone_came", True):
            logger.info(f"room {self._room}: nobody came in {EMPTY_ROOM_SECS:.0f} s; leaving")
            await call.worker.cancel()

    async def close(self) -> None:
        if self._empty_room_watch is not None:
            self._empty_room_watch.cancel()

    def succeeded(self) -> bool:
        """A room where no phone ever answered was no call: the outbound callee who never
        answered (the agent joins while the phone rings), or a caller gone before it came."""
        return bool(getattr(self._transport, "answered", False))
