"""LiveKit SIP call control: the requests ``livekit-api`` sends, caught by a Twirp server on loopback."""

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from livekit import api
from livekit.protocol import sip
from pydantic import SecretStr

from conftest import free_port
from switchboard.settings import Settings
from switchboard.telephony.base import TransferOutcome
from switchboard.telephony.livekit import LiveKitCallControl, transfer_uri

ROOM = "call-abc123"


class FakeLiveKit:
    """Answers the three Twirp methods call control uses and keeps what it was sent."""

    def __init__(self, transfer_status: int = sip.STS_TRANSFER_SUCCESSFUL):
        self.requests: list[tuple[str, object, str]] = []
        self.transfer_status = transfer_status

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await request.read()
        auth = request.headers.get("Authorization", "")
        if method == "ListParticipants":
            self.requests.append((method, api.ListParticipantsRequest.FromString(body), auth))
            reply = api.ListParticipantsResponse(
                participants=[
                    api.ParticipantInfo(identity="agent-1", kind=api.ParticipantInfo.Kind.AGENT),
                    api.ParticipantInfo(
                        identity="sip_+15105550100", kind=api.ParticipantInfo.Kind.SIP
                    ),
                ]
            )
        elif method == "TransferSIPParticipant":
            self.requests.append((method, api.TransferSIPParticipantRequest.FromString(body), auth))
            reply = api.TransferSIPParticipantResponse(status=self.transfer_status)
        elif method == "DeleteRoom":
            self.requests.append((method, api.DeleteRoomRequest.FromString(body), auth))
            reply = api.DeleteRoomResponse()
        else:
            return web.json_response({"code": "not_found", "msg": method}, status=404)
        return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")


@pytest.fixture
async def livekit() -> AsyncIterator[tuple[FakeLiveKit, Settings]]:
    fake = FakeLiveKit()
    app = web.Application()
    app.router.add_post("/twirp/{service}/{method}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    settings = Settings(
        livekit_url=f"http://127.0.0.1:{port}",
        livekit_api_key="key",
        livekit_api_secret=SecretStr("s" * 32),
    )
    yield fake, settings
    await runner.cleanup()


def test_numbers_become_tel_uris_and_sip_uris_stay() -> None:
    assert transfer_uri("+15551234567") == "tel:+15551234567"
    assert transfer_uri("sip:desk@pbx.example.com") == "sip:desk@pbx.example.com"


async def test_transfer_refers_the_rooms_sip_participant(livekit) -> None:
    fake, settings = livekit
    outcome = await LiveKitCallControl(settings, ROOM).transfer("+15551234567")
    assert outcome is TransferOutcome.ANSWERED
    (m1, listed, auth), (m2, transfer, _) = fake.requests
    assert (m1, listed.room) == ("ListParticipants", ROOM)
    assert auth.startswith("Bearer ")
    assert m2 == "TransferSIPParticipant"
    assert transfer.room_name == ROOM
    assert transfer.participant_identity == "sip_+15105550100"
    assert transfer.transfer_to == "tel:+15551234567"
    assert transfer.ringing_timeout.seconds == settings.transfer_ring_secs


async def test_a_failed_refer_is_a_failed_transfer(livekit) -> None:
    fake, settings = livekit
    fake.transfer_status = sip.STS_TRANSFER_FAILED
    assert (
        await LiveKitCallControl(settings, ROOM).transfer("sip:desk@pbx.example.com")
        is TransferOutcome.FAILED
    )


async def test_an_invalid_target_never_reaches_livekit(livekit) -> None:
    fake, settings = livekit
    assert (
        await LiveKitCallControl(settings, ROOM).transfer("desk") is TransferOutcome.INVALID_TARGET
    )
    assert fake.requests == []


async def test_hang_up_closes_the_room(livekit) -> None:
    fake, settings = livekit
    await LiveKitCallControl(settings, ROOM).hang_up()
    assert [(m, r.room) for m, r, _ in fake.requests] == [("DeleteRoom", ROOM)]
