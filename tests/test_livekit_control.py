"""LiveKit SIP call control: the requests ``livekit-api`` sends, caught by a Twirp server on loopback."""

from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from livekit import api
from livekit.protocol import sip
from pydantic import SecretStr

from livekit_fake import (
    BUSY_HERE,
    KEY,
    RING_TIMEOUT,
    SECRET,
    UNAVAILABLE,
    FakeLiveKit,
    TwirpFailure,
    running_fake,
)
from switchboard.settings import Settings
from switchboard.telephony.base import TransferOutcome, UnsupportedOperation
from switchboard.telephony.livekit import LiveKitCallControl, LiveKitRoomAdapter, transfer_uri

ROOM = "call-abc123"
TRUNK = "ST_outbound1"
DESK = "+15551234567"


@pytest.fixture
async def livekit() -> AsyncIterator[tuple[FakeLiveKit, Settings]]:
    async with running_fake() as fake:
        settings = Settings(
            livekit_url=fake.url,
            livekit_api_key=KEY,
            livekit_api_secret=SecretStr(SECRET),
            livekit_outbound_trunk=TRUNK,
            transfer_ring_secs=20,
        )
        yield fake, settings


def test_numbers_become_tel_uris_and_sip_uris_stay() -> None:
    assert transfer_uri("+15551234567") == "tel:+15551234567"
    assert transfer_uri("sip:desk@pbx.example.com") == "sip:desk@pbx.example.com"


async def test_transfer_refers_the_rooms_sip_participant(livekit) -> None:
    fake, settings = livekit
    outcome = await LiveKitCallControl(settings, ROOM).transfer(DESK)
    assert outcome is TransferOutcome.ANSWERED
    assert fake.methods() == ["ListParticipants", "TransferSIPParticipant"]
    (listed,), (transfer,) = fake.sent("ListParticipants"), fake.sent("TransferSIPParticipant")
    assert listed.room == ROOM
    assert transfer.room_name == ROOM
    assert transfer.participant_identity == "sip_+15105550100"
    assert transfer.transfer_to == "tel:+15551234567"
    assert transfer.ringing_timeout.seconds == settings.transfer_ring_secs


async def test_a_failed_refer_is_a_failed_transfer(livekit) -> None:
    fake, settings = livekit
    fake.replies["TransferSIPParticipant"] = api.TransferSIPParticipantResponse(
        status=sip.STS_TRANSFER_FAILED
    )
    outcome = await LiveKitCallControl(settings, ROOM).transfer("sip:desk@pbx.example.com")
    assert outcome is TransferOutcome.FAILED


async def test_an_invalid_target_never_reaches_livekit(livekit) -> None:
    fake, settings = livekit
    control = LiveKitCallControl(settings, ROOM)
    assert await control.transfer("desk") is TransferOutcome.INVALID_TARGET
    assert await control.warm_transfer("desk", "hi") is TransferOutcome.INVALID_TARGET
    assert fake.requests == []


async def test_hang_up_closes_the_room(livekit) -> None:
    fake, settings = livekit
    await LiveKitCallControl(settings, ROOM).hang_up()
    assert [(r.method, r.request.room) for r in fake.requests] == [("DeleteRoom", ROOM)]


async def test_an_answered_warm_transfer_dials_into_a_consult_room_then_moves_the_person_in(
    livekit,
) -> None:
    fake, settings = livekit
    summary = "You have a caller who asked for billing."
    outcome = await LiveKitCallControl(settings, ROOM).warm_transfer(DESK, summary)
    assert outcome is TransferOutcome.ANSWERED
    assert fake.methods() == ["CreateSIPParticipant", "MoveParticipant"]
    (dial,), (move,) = fake.sent("CreateSIPParticipant"), fake.sent("MoveParticipant")
    assert (dial.sip_trunk_id, dial.sip_call_to) == (TRUNK, DESK)
    assert dial.room_name == "consult-abc123" and dial.room_name != ROOM
    assert dial.wait_until_answered is True
    assert dial.ringing_timeout.seconds == 20
    assert dict(dial.participant_attributes) == {
        "switchboard.summary": summary,
        "switchboard.caller_room": ROOM,
    }
    assert (move.room, move.identity, move.destination_room) == (
        "consult-abc123",
        dial.participant_identity,
        ROOM,
    )
    # Dialing needs the SIP call grant; moving needs admin of both rooms.
    create_grants, move_grants = fake.requests[0].grants, fake.requests[1].grants
    assert create_grants.sip.call is True
    assert move_grants.video.room_admin and move_grants.video.destination_room == ROOM


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (RING_TIMEOUT, TransferOutcome.NO_ANSWER),
        (UNAVAILABLE, TransferOutcome.NO_ANSWER),
        (BUSY_HERE, TransferOutcome.BUSY),
        (TwirpFailure(404, "not_found", "trunk ST_outbound1 not found"), TransferOutcome.FAILED),
    ],
    ids=["ring-timeout", "480", "486", "no-trunk"],
)
async def test_an_unanswered_warm_transfer_hangs_up_the_consult_room_and_leaves_the_caller(
    livekit, failure: TwirpFailure, outcome: TransferOutcome
) -> None:
    fake, settings = livekit
    fake.failures["CreateSIPParticipant"] = failure
    assert await LiveKitCallControl(settings, ROOM).warm_transfer(DESK, "hi") is outcome
    assert fake.methods() == ["CreateSIPParticipant", "DeleteRoom"]
    assert fake.sent("DeleteRoom")[0].room == "consult-abc123"  # never the caller's room


async def test_a_refused_move_is_a_failed_warm_transfer_and_hangs_up_the_person(livekit) -> None:
    fake, settings = livekit
    fake.failures["MoveParticipant"] = TwirpFailure(501, "unimplemented", "not supported")
    assert (
        await LiveKitCallControl(settings, ROOM).warm_transfer(DESK, "hi") is TransferOutcome.FAILED
    )
    assert fake.methods() == ["CreateSIPParticipant", "MoveParticipant", "DeleteRoom"]
    assert fake.sent("DeleteRoom")[0].room == "consult-abc123"


async def test_a_warm_transfer_without_an_outbound_trunk_is_unsupported(livekit) -> None:
    fake, settings = livekit
    control = LiveKitCallControl(settings.model_copy(update={"livekit_outbound_trunk": None}), ROOM)
    with pytest.raises(UnsupportedOperation, match="OUTBOUND_TRUNK"):
        await control.warm_transfer(DESK, "hi")
    with pytest.raises(UnsupportedOperation, match="numbers"):
        await LiveKitCallControl(settings, ROOM).warm_transfer("sip:desk@pbx.example.com", "hi")
    assert fake.requests == []


class _Worker:
    def __init__(self) -> None:
        self.cancelled = False

    async def cancel(self, reason: str | None = None) -> None:
        self.cancelled = True


class _Transport:
    """Pipecat's event-handler registration, without LiveKit's client SDK (``livekit.rtc``),
    which this environment does not install."""

    def __init__(self) -> None:
        self.handlers: dict[str, object] = {}

    def event_handler(self, name: str):
        def register(handler):
            self.handlers[name] = handler
            return handler

        return register


async def test_a_room_call_ends_when_the_room_closes_under_the_agent(livekit) -> None:
    _fake, settings = livekit
    adapter = LiveKitRoomAdapter(settings, ROOM, "call-1")
    adapter._transport = transport = _Transport()  # type: ignore[assignment]
    worker = _Worker()
    adapter.attach(SimpleNamespace(worker=worker))  # type: ignore[arg-type]
    await transport.handlers["on_disconnected"](transport)
    assert worker.cancelled
