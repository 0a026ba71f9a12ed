"""A stand-in for LiveKit's Twirp server API on loopback: it checks each request's access token
as LiveKit does, keeps the request objects ``livekit-api`` sent, and answers as told (a reply,
or the Twirp error LiveKit would give)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from livekit import api
from livekit.protocol import sip

from conftest import free_port

KEY, SECRET = "key", "s" * 32

# Method -> (request type, default reply)
_METHODS = {
    "ListParticipants": (
        api.ListParticipantsRequest,
        api.ListParticipantsResponse(
            participants=[
                api.ParticipantInfo(identity="agent-1", kind=api.ParticipantInfo.Kind.AGENT),
                api.ParticipantInfo(identity="transfer_+15550000000", kind=api.ParticipantInfo.Kind.SIP),
                api.ParticipantInfo(
                    identity="sip_+15105550100", kind=api.ParticipantInfo.Kind.SIP,
                    permission=api.ParticipantPermission(can_subscribe=True, can_publish=True),
                    tracks=[api.TrackInfo(sid="TR_caller")],
                ),  # fmt: skip
                # The person a warm transfer dialed in: a SIP participant too, never the caller.
                api.ParticipantInfo(identity="transfer_+15551234567", kind=api.ParticipantInfo.Kind.SIP),
            ]
        ),
    ),
    "TransferSIPParticipant": (
        api.TransferSIPParticipantRequest,
        api.TransferSIPParticipantResponse(status=sip.STS_TRANSFER_SUCCESSFUL),
    ),
    "DeleteRoom": (api.DeleteRoomRequest, api.DeleteRoomResponse()),
    "CreateSIPParticipant": (
        api.CreateSIPParticipantRequest,
        api.SIPParticipantInfo(participant_id="PA_fake", sip_call_id="SCL_fake123"),
    ),
    "UpdateParticipant": (api.UpdateParticipantRequest, api.ParticipantInfo()),
    "UpdateSubscriptions": (api.UpdateSubscriptionsRequest, api.UpdateSubscriptionsResponse()),
    "GetParticipant": (
        api.RoomParticipantIdentity,
        api.ParticipantInfo(identity="transfer_+15551234567", tracks=[api.TrackInfo(sid="TR_desk")]),
    ),
    "UpdateRoomMetadata": (api.UpdateRoomMetadataRequest, api.Room()),
}


@dataclass(frozen=True)
class TwirpFailure:
    """An error answer: HTTP status, Twirp code, message and metadata, as LiveKit sends them."""

    status: int
    code: str
    msg: str
    meta: dict[str, str] = field(default_factory=dict)


# The callee did not answer before the ring timeout: livekit/sip cancels the INVITE and
# returns psrpc Canceled "sip request timed out" (no SIP final response, so no sip_status_code).
RING_TIMEOUT = TwirpFailure(408, "canceled", "sip request timed out")
# The far end answered the INVITE 486 Busy Here (SIPStatus.TwirpErrorMeta, resource_exhausted).
BUSY_HERE = TwirpFailure(
    429, "resource_exhausted", "sip status 486: Busy Here",
    {"sip_status_code": "486", "sip_status": "Busy Here"},
)  # fmt: skip
# The carrier's own no-answer: 480 Temporarily Unavailable.
UNAVAILABLE = TwirpFailure(
    429, "resource_exhausted", "sip status 480: Temporarily Unavailable",
    {"sip_status_code": "480", "sip_status": "Temporarily Unavailable"},
)  # fmt: skip


@dataclass(frozen=True)
class Received:
    method: str
    request: object
    grants: api.Claims


class FakeLiveKit:
    """Answers the Twirp methods Switchboard uses and keeps what it was sent, in order."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.failures: dict[str, TwirpFailure] = {}
        self.replies: dict[str, object] = {}  # method -> reply instead of the default
        # method -> run as the request arrives (to see what was true at that moment)
        self.on_request: dict[str, Callable[[], Awaitable[None]]] = {}
        self.url = ""
        self._verifier = api.TokenVerifier(KEY, SECRET)

    def sent(self, method: str) -> list:
        return [r.request for r in self.requests if r.method == method]

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if method not in _METHODS:
            return web.json_response({"code": "bad_route", "msg": method}, status=404)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            claims = self._verifier.verify(token)
        except Exception as e:  # noqa: BLE001 - any token LiveKit would refuse
            return web.json_response({"code": "unauthenticated", "msg": str(e)}, status=401)
        kind, reply = _METHODS[method]
        self.requests.append(Received(method, kind.FromString(await request.read()), claims))
        if method in self.on_request:
            await self.on_request[method]()
        failure = self.failures.get(method)
        if failure is not None:
            body = {"code": failure.code, "msg": failure.msg}
            if failure.meta:
                body["meta"] = failure.meta
            return web.json_response(body, status=failure.status)
        reply = self.replies.get(method, reply)
        return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")


@asynccontextmanager
async def running_fake() -> AsyncIterator[FakeLiveKit]:
    fake = FakeLiveKit()
    app = web.Application()
    app.router.add_post("/twirp/{service}/{method}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
