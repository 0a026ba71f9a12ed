"""A LiveKit room as a call: the agent's access token, Pipecat's LiveKit transport, and SIP
call control through ``livekit-api`` (cold transfer by SIP REFER, warm transfer through a consult
room, hang up by closing the room)."""

from __future__ import annotations

import asyncio
import datetime
import re
import time
from typing import TYPE_CHECKING

from livekit import api as livekit_api
from livekit.protocol import sip as sip_proto
from livekit.protocol.models import ParticipantInfo
from loguru import logger
from pipecat.transports.base_transport import BaseTransport

from switchboard.agent.config import valid_transfer_target
from switchboard.errors import ConfigError, SwitchboardError
from switchboard.settings import Settings
from switchboard.telephony.base import (
    Brief,
    CallAdapter,
    CallControl,
    CallIds,
    TransferOutcome,
    UnsupportedOperation,
)
from switchboard.telephony.livekit_sip import (
    LIVEKIT_ERRORS,
    describe,
    dial,
    dial_outcome,
    duration,
    livekit_client,
    sip_status,
)

if TYPE_CHECKING:
    from switchboard.call.conversation.pipeline import CallPipeline

# LiveKit SIP's individual dispatch rule names a room ``{prefix}_{caller}_{random}``, and the
# caller is an E.164 number: with the prefix ``call-`` that is ``call-_+15105550100_6jgXbZsZqcnm``,
# so ``+`` belongs here (a name without it was never given an agent by the real server).
ROOM_PATTERN = re.compile(r"^call-[A-Za-z0-9_+\-]{1,120}$")
AGENT_TOKEN_TTL = datetime.timedelta(hours=2)
TRANSFER_PREFIX = "transfer_"  # the identity of the person a warm transfer dials into the room
BRIDGED_METADATA = "switchboard:bridged"  # a room whose caller a warm transfer handed over
_TRACK_WAIT_SECS = 3.0  # how long an answered phone may take to publish its audio
# The agent's audio source queues this much ahead of the room (Pipecat's default is 1000 ms):
# "the bot stopped speaking" comes that much before the caller has heard the end of the line.
OUT_QUEUE_MS = 200
_PLAYED_OUT_SECS = OUT_QUEUE_MS / 1000 + 0.1  # after "stopped speaking": the queue has played
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

    def __init__(self, settings: Settings, room: str, agent: str = ""):
        self._settings = settings
        self._room = room
        self._agent = agent  # the agent's participant identity in the room

    def _api(self) -> livekit_api.LiveKitAPI:
        return livekit_client(self._settings)

    async def transfer(self, target: str) -> TransferOutcome:
        if not valid_transfer_target(target):
            return TransferOutcome.INVALID_TARGET
        try:
            async with self._api() as lk:
                caller = await _Room(lk, self._room).sip_caller()
                if caller is None:
                    logger.warning(f"room {self._room}: no SIP participant to transfer")
                    return TransferOutcome.FAILED
                response = await lk.sip.transfer_sip_participant(
                    livekit_api.TransferSIPParticipantRequest(
                        room_name=self._room,
                        participant_identity=caller.identity,
                        transfer_to=transfer_uri(target),
                        play_dialtone=False,
                        ringing_timeout=duration(self._settings.transfer_ring_secs),
                    )
                )
        except LIVEKIT_ERRORS as e:
            # LiveKit SIP waits for the REFER's outcome: a person the far end says is busy or
            # not answering is said as such, and the caller stays with the agent.
            outcome = dial_outcome(e) if sip_status(e) is not None else TransferOutcome.FAILED
            logger.info(f"room {self._room}: transfer to {target}: {outcome.value} ({describe(e)})")
            return outcome
        ok = response.status != sip_proto.STS_TRANSFER_FAILED
        return TransferOutcome.ANSWERED if ok else TransferOutcome.FAILED

    async def warm_transfer(
        self, target: str, summary: str, brief: Brief | None = None
    ) -> TransferOutcome:
        """Ring the person into the caller's room on hold, brief them, then bridge the two.

        Works on any LiveKit server: only subscriptions and permissions change, no participant
        moves between rooms (``MoveParticipant`` is LiveKit Cloud's; the open-source server
        answers it "not implemented"). While the person rings and is briefed the caller hears
        nobody (their permission to subscribe is withdrawn) and the agent does not listen to
        either phone, so nothing said on hold reaches the other side or starts a reply. The
        person answers (``CreateSIPParticipant`` with ``wait_until_answered``: busy, or no
        answer within ``transfer_ring_secs``, is the outcome and the caller is given back to
        the agent), hears ``summary`` from the agent (``brief``), then the caller and the person
        hear each other and the agent leaves. The room is marked bridged (its metadata) so the
        orchestrator closes it when either phone hangs up.
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
        identity = f"{TRANSFER_PREFIX}{target}"
        try:
            async with self._api() as lk:
                room = _Room(lk, self._room)
                caller = await room.sip_caller()
                if caller is None:
                    logger.warning(f"room {self._room}: no SIP participant to transfer")
                    return TransferOutcome.FAILED
                await room.hold(caller, self._agent)
                try:
                    await dial(
                        lk, trunk=trunk, to=target, room=self._room, identity=identity,
                        name="Transfer", ring_secs=self._settings.transfer_ring_secs,
                        attributes={"switchboard.summary": summary},
                    )  # fmt: skip
                except LIVEKIT_ERRORS as e:
                    outcome = dial_outcome(e)
                    logger.info(
                        f"room {self._room}: warm transfer to {target}: {outcome.value} ({describe(e)})"
                    )
                    await room.unhold(caller, self._agent)
                    return outcome
                person = await room.answered(identity)
                await room.keep_apart(person, caller, self._agent)
                if brief is not None:
                    await brief(summary)
                    await asyncio.sleep(_PLAYED_OUT_SECS)  # the caller must not hear its end
                if not await room.present(identity):
                    logger.info(f"room {self._room}: {target} hung up before the bridge")
                    await room.unhold(caller, self._agent)
                    return TransferOutcome.FAILED
                await room.bridge(caller, person)
        except LIVEKIT_ERRORS as e:
            logger.warning(f"room {self._room}: warm transfer to {target} failed: {describe(e)}")
            await self._quietly_unhold()
            return TransferOutcome.FAILED
        logger.info(f"room {self._room}: {target} answered and joined the caller")
        return TransferOutcome.ANSWERED

    async def _quietly_unhold(self) -> None:
        """Give the caller back to the agent after a transfer broke half way."""
        try:
            async with self._api() as lk:
                room = _Room(lk, self._room)
                if (caller := await room.sip_caller()) is not None:
                    await room.unhold(caller, self._agent)
        except LIVEKIT_ERRORS as e:
            logger.warning(f"room {self._room}: could not take the caller off hold: {describe(e)}")

    async def hang_up(self) -> None:
        """Leaving the room would leave the caller on hold: close the room, which hangs up SIP."""
        await asyncio.sleep(_PLAYED_OUT_SECS)  # the goodbye, queued, is still playing
        try:
            async with self._api() as lk:
                await lk.room.delete_room(livekit_api.DeleteRoomRequest(room=self._room))
        except LIVEKIT_ERRORS as e:
            logger.warning(f"room {self._room}: could not close the room: {e!r}")


class _Room:
    """Who hears whom in one call room, changed through the server API."""

    def __init__(self, lk: livekit_api.LiveKitAPI, name: str):
        self._lk, self._name = lk, name

    async def sip_caller(self) -> ParticipantInfo | None:
        """The caller's SIP participant (not the person a transfer dialed in)."""
        listed = await self._lk.room.list_participants(
            livekit_api.ListParticipantsRequest(room=self._name)
        )
        sip = ParticipantInfo.Kind.SIP
        return next(
            (p for p in listed.participants
             if p.kind == sip and not p.identity.startswith(TRANSFER_PREFIX)),
            None,
        )  # fmt: skip

    async def answered(self, identity: str) -> ParticipantInfo:
        """The person who answered, once their phone's audio is published in the room."""
        deadline = time.monotonic() + _TRACK_WAIT_SECS
        while True:
            person = await self._lk.room.get_participant(
                livekit_api.RoomParticipantIdentity(room=self._name, identity=identity)
            )
            if person.tracks or time.monotonic() > deadline:
                return person
            await asyncio.sleep(0.05)

    async def present(self, identity: str) -> bool:
        listed = await self._lk.room.list_participants(
            livekit_api.ListParticipantsRequest(room=self._name)
        )
        return any(p.identity == identity for p in listed.participants)

    async def hold(self, caller: ParticipantInfo, agent: str) -> None:
        """The caller hears nobody; the agent stops listening to them."""
        await self._may_subscribe(caller, False)
        await self._listen(agent, caller, False)

    async def unhold(self, caller: ParticipantInfo, agent: str) -> None:
        await self._listen(agent, caller, True)
        await self._may_subscribe(caller, True)

    async def keep_apart(self, person: ParticipantInfo, caller: ParticipantInfo, agent: str) -> None:
        """While the agent briefs the person: the person does not hear the caller, and the
        agent does not listen to the person (a "hello?" must not start a reply)."""
        await self._listen(person.identity, caller, False)
        await self._listen(agent, person, False)

    async def bridge(self, caller: ParticipantInfo, person: ParticipantInfo) -> None:
        """The caller and the person hear each other; the room closes when either leaves."""
        await self._listen(person.identity, caller, True)
        await self._may_subscribe(caller, True)
        await self._lk.room.update_room_metadata(
            livekit_api.UpdateRoomMetadataRequest(room=self._name, metadata=BRIDGED_METADATA)
        )

    async def _may_subscribe(self, participant: ParticipantInfo, allowed: bool) -> None:
        permission = livekit_api.ParticipantPermission()
        permission.CopyFrom(participant.permission)
        permission.can_subscribe = allowed
        await self._lk.room.update_participant(
            livekit_api.UpdateParticipantRequest(
                room=self._name, identity=participant.identity, permission=permission
            )
        )

    async def _listen(self, listener: str, to: ParticipantInfo, subscribe: bool) -> None:
        tracks = [t.sid for t in to.tracks]
        if listener and tracks:
            await self._lk.room.update_subscriptions(
                livekit_api.UpdateSubscriptionsRequest(
                    room=self._name, identity=listener, track_sids=tracks, subscribe=subscribe
                )
            )


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

    from switchboard.telephony.livekit_room_audio import RoomAudioClient

    class CallRoomTransport(LiveKitTransport):
        def __init__(self, *args, input_frame_ms: int, **kwargs):
            super().__init__(*args, **kwargs)
            # Before input() and output() share it: the caller's audio at the pipeline's rate.
            self._client = RoomAudioClient.replacing(self._client, input_frame_ms)
            self.answered = False
            self.anyone_came = False  # answered or not
            self._ringing: set[str] = set()
            self._tasks: set[asyncio.Task] = set()
            self._watching = False

        async def _on_participant_connected(self, participant_id: str) -> None:
            if participant_id.startswith(TRANSFER_PREFIX):
                return  # the person a warm transfer dialed in: not a caller to greet
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

        async def _on_participant_disconnected(self, participant_id: str) -> None:
            if participant_id.startswith(TRANSFER_PREFIX):
                return  # a transfer's person hanging up leaves the caller with the agent
            await super()._on_participant_disconnected(participant_id)

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
        self.control = control or LiveKitCallControl(settings, room, agent=f"agent-{call_id}")
        self._url = settings.livekit_url
        self._input_frame_ms = settings.input_frame_ms
        self._room = room
        self._token = agent_room_token(settings, room, identity=f"agent-{call_id}")  # see control
        self._transport: BaseTransport | None = None
        self._empty_room_watch: asyncio.Task | None = None

    def transport(self) -> BaseTransport:
        if self._transport is None:
            from pipecat.transports.livekit.transport import LiveKitParams

            self._transport = _call_room_transport()(
                url=self._url,
                token=self._token,
                room_name=self._room,
                input_frame_ms=self._input_frame_ms,
                params=LiveKitParams(
                    audio_in_enabled=True,
                    audio_out_enabled=True,
                    audio_out_queue_size_ms=OUT_QUEUE_MS,
                ),
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
