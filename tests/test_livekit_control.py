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


HOLD = ["ListParticipants", "UpdateParticipant", "UpdateSubscriptions"]


async def test_an_answered_warm_transfer_dials_into_the_callers_room_briefs_then_bridges(
    livekit,
) -> None:
    """The over-the-wire flow is tested against the real server (test_livekit_sip.py); here,
    every request and the order they come in."""
    fake, settings = livekit
    summary = "You have a caller who asked for billing."
    briefed: list[str] = []

    async def brief(line: str) -> None:
        briefed.append(line)
        assert fake.methods()[-1] == "UpdateSubscriptions"  # kept apart while briefed

    control = LiveKitCallControl(settings, ROOM, agent="agent-1")
    assert await control.warm_transfer(DESK, summary, brief) is TransferOutcome.ANSWERED
    assert briefed == [summary]
    assert fake.methods() == [
        *HOLD, "CreateSIPParticipant", "GetParticipant", "UpdateSubscriptions",
        "UpdateSubscriptions", "ListParticipants", "UpdateSubscriptions", "UpdateParticipant",
        "UpdateRoomMetadata",
    ]  # fmt: skip
    (dial,) = fake.sent("CreateSIPParticipant")
    assert (dial.sip_trunk_id, dial.sip_call_to, dial.room_name) == (TRUNK, DESK, ROOM)
    assert dial.wait_until_answered is True and dial.ringing_timeout.seconds == 20
    hold, unhold = fake.sent("UpdateParticipant")
    assert hold.identity == unhold.identity == "sip_+15105550100"
    assert (hold.permission.can_subscribe, unhold.permission.can_subscribe) == (False, True)
    assert hold.permission.can_publish, "the caller keeps their voice"
    listens = [(r.identity, list(r.track_sids), r.subscribe) for r in fake.sent("UpdateSubscriptions")]
    assert listens == [
        ("agent-1", ["TR_caller"], False),  # on hold: the agent does not listen to the caller
        (dial.participant_identity, ["TR_caller"], False),  # nor the person, while briefed
        ("agent-1", ["TR_desk"], False),  # nor the agent to the person ("hello?")
        (dial.participant_identity, ["TR_caller"], True),  # bridged
    ]
    assert fake.sent("UpdateRoomMetadata")[0].metadata == "switchboard:bridged"


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
async def test_an_unanswered_warm_transfer_gives_the_caller_back_to_the_agent(
    livekit, failure: TwirpFailure, outcome: TransferOutcome
) -> None:
    fake, settings = livekit
    fake.failures["CreateSIPParticipant"] = failure
    control = LiveKitCallControl(settings, ROOM, agent="agent-1")
    assert await control.warm_transfer(DESK, "hi") is outcome
    assert fake.methods() == [*HOLD, "CreateSIPParticipant", "UpdateSubscriptions", "UpdateParticipant"]
    resubscribed, unhold = fake.sent("UpdateSubscriptions")[-1], fake.sent("UpdateParticipant")[-1]
    assert (resubscribed.identity, resubscribed.subscribe) == ("agent-1", True)
    assert unhold.permission.can_subscribe is True
    assert "DeleteRoom" not in fake.methods(), "the caller's room is never closed"


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
