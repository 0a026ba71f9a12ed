"""LiveKit outbound calls and agent choice for LiveKit rooms, at the request level: the real
orchestrator app in-process on a real Redis, its ``livekit-api`` requests caught by a Twirp fake,
its LiveKit webhooks signed with ``livekit-api`` tokens."""

import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
from livekit import api as livekit_api
from pydantic import SecretStr

from conftest import TEST_AGENT, RedisServer, start_redis
from livekit_fake import BUSY_HERE, KEY, RING_TIMEOUT, SECRET, FakeLiveKit, running_fake
from switchboard.agent.config import load_agent_config
from switchboard.agent.directory import AgentDirectory
from switchboard.dispatch import keys
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.models import Job
from switchboard.dispatch.queue import JobQueue
from switchboard.orchestrator.app import create_orchestrator_app
from switchboard.settings import Settings
from switchboard.worker.jobs import job_agent

API_KEY = "livekit-outbound-key"
TRUNK = "ST_outbound1"
OUR_NUMBER = "+15005550101"
CALLEE = "+15005550444"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class Orchestrator:
    def __init__(self, http: httpx.AsyncClient, fake: FakeLiveKit, client: redis.Redis):
        self.http, self.fake, self.redis = http, fake, client

    async def place(self, body: dict) -> httpx.Response:
        return await self.http.post("/calls", json=body, headers={"X-API-Key": API_KEY})

    async def jobs(self) -> list[Job]:
        """Every job on the queue, claimed as a worker would."""
        return [job for _id, job in await JobQueue(self.redis).claim("test-worker", 10, count=100)]


@pytest.fixture
async def orchestrator(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Orchestrator]:
    client = redis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    async with running_fake() as fake:
        settings = Settings(
            redis_url=redis_server.url,
            api_key=SecretStr(API_KEY),
            database_url=f"sqlite:///{tmp_path}/calls.db",
            livekit_url=fake.url,
            livekit_api_key=KEY,
            livekit_api_secret=SecretStr(SECRET),
            livekit_outbound_trunk=TRUNK,
            outbound_ring_secs=25,
        )
        app = create_orchestrator_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://orchestrator"
            ) as http:
                yield Orchestrator(http, fake, client)
    await client.aclose()


async def test_an_outbound_call_queues_the_agent_then_dials_the_callee_into_its_room(
    orchestrator: Orchestrator,
) -> None:
    queued_when_dialed: list[int] = []

    async def count_jobs() -> None:
        queued_when_dialed.append(await orchestrator.redis.xlen(keys.jobs()))

    orchestrator.fake.on_request["CreateSIPParticipant"] = count_jobs
    response = await orchestrator.place(
        {"to": CALLEE, "from": OUR_NUMBER, "agent": "Sales", "ingress": "livekit"}
    )
    assert response.status_code == 201, response.text
    placed = response.json()
    assert placed["status"] == "answered" and placed["call_sid"] == "SCL_fake123"
    room, call_id = placed["room"], placed["call_id"]
    assert queued_when_dialed == [1]  # the agent's job was queued before the phone rang
    (dial,) = orchestrator.fake.sent("CreateSIPParticipant")
    assert dial.room_name == room and room.startswith("call-")
    assert (dial.sip_trunk_id, dial.sip_call_to, dial.sip_number) == (TRUNK, CALLEE, OUR_NUMBER)
    assert dial.participant_identity == f"sip_{CALLEE}"
    assert dict(dial.participant_attributes) == {
        "switchboard.agent": "Sales",
        "switchboard.call_id": call_id,
    }
    assert dial.wait_until_answered and dial.ringing_timeout.seconds == 25
    assert orchestrator.fake.requests[0].grants.sip.call is True
    (job,) = await orchestrator.jobs()
    assert (job.call_id, job.room, job.agent) == (call_id, room, "Sales")
    assert job.sip is not None and job.sip.phone_number == CALLEE and job.sip.trunk_id == TRUNK
    assert await orchestrator.redis.get(keys.room(room)) == call_id


@pytest.mark.parametrize(
    ("failure", "status", "outcome", "sip_code"),
    [(RING_TIMEOUT, 504, "no_answer", None), (BUSY_HERE, 502, "busy", 486)],
    ids=["no-answer", "busy"],
)
async def test_a_call_that_fails_to_dial_releases_its_agent_job(
    orchestrator: Orchestrator, failure, status: int, outcome: str, sip_code: int | None
) -> None:
    orchestrator.fake.failures["CreateSIPParticipant"] = failure
    response = await orchestrator.place({"to": CALLEE, "ingress": "livekit"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert (detail["outcome"], detail["sip_status_code"]) == (outcome, sip_code)
    call_id = detail["call_id"]
    (dial,) = orchestrator.fake.sent("CreateSIPParticipant")
    assert [r.room for r in orchestrator.fake.sent("DeleteRoom")] == [dial.room_name]
    state = await orchestrator.redis.hgetall(keys.call(call_id))
    assert (state["status"], state["reason"]) == ("failed", f"dial_{outcome}")
    assert await orchestrator.redis.get(keys.room(dial.room_name)) is None
    # A worker claiming the job now finds the call over and does not join the room.
    (job,) = await orchestrator.jobs()
    assert await CallLedger(orchestrator.redis, 60).take(job.call_id, "test-worker") == "done"


async def test_the_request_names_the_ingress_else_the_setting_does(
    orchestrator: Orchestrator, redis_server: RedisServer, tmp_path: Path
) -> None:
    # This orchestrator's default is twilio, which has no credentials here: 503, nothing dialed.
    twilio = await orchestrator.place({"to": CALLEE})
    assert twilio.status_code == 503 and "TWILIO" in twilio.text
    assert orchestrator.fake.requests == []
    refused = await orchestrator.place({"to": CALLEE, "ingress": "livekit", "voicemail": "Hi."})
    assert refused.status_code == 422 and "voicemail" in refused.text
    assert orchestrator.fake.requests == []
    settings = Settings(
        redis_url=redis_server.url, api_key=SecretStr(API_KEY),
        database_url=f"sqlite:///{tmp_path}/calls2.db", livekit_url=orchestrator.fake.url,
        livekit_api_key=KEY, livekit_api_secret=SecretStr(SECRET), livekit_outbound_trunk=TRUNK,
        outbound_ingress="livekit",
    )  # fmt: skip
    app = create_orchestrator_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://o") as http:
            by_setting = await http.post(
                "/calls", json={"to": CALLEE}, headers={"X-API-Key": API_KEY}
            )
            by_request = await http.post(
                "/calls", json={"to": CALLEE, "ingress": "twilio"}, headers={"X-API-Key": API_KEY}
            )
    assert by_setting.status_code == 201 and by_setting.json()["ingress"] == "livekit"
    assert by_request.status_code == 503  # twilio, as asked
    assert len(orchestrator.fake.sent("CreateSIPParticipant")) == 1


def livekit_event(room: str, attributes: dict[str, str]) -> bytes:
    event = {
        "event": "participant_joined",
        "id": "EV_" + uuid.uuid4().hex[:12],
        "createdAt": str(int(time.time())),
        "room": {"sid": "RM_" + uuid.uuid4().hex[:12], "name": room},
        "participant": {
            "sid": "PA_" + uuid.uuid4().hex[:12], "identity": "sip_+15105550100",
            "state": "ACTIVE", "kind": "SIP", "attributes": attributes,
        },
    }  # fmt: skip
    return json.dumps(event).encode()


def sign(body: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return livekit_api.AccessToken(KEY, SECRET).with_sha256(digest).to_jwt()


async def post_webhook(orchestrator: Orchestrator, body: bytes) -> dict:
    response = await orchestrator.http.post(
        "/webhooks/livekit",
        content=body,
        headers={"Content-Type": "application/webhook+json", "Authorization": sign(body)},
    )
    assert response.status_code == 200, response.text
    return response.json()


def agents_dir(tmp_path: Path) -> AgentDirectory:
    agents = tmp_path / "agents"
    agents.mkdir()
    for name, claim in [
        ("Billing", 'numbers: ["+15550001111"]'),
        ("Support", "livekit_trunks: [ST_support]"),
        ("Sales", "livekit_rooms: [call-sales-*]"),
    ]:
        (agents / f"{name.lower()}.yaml").write_text(
            f"name: {name}\n{claim}\ngreeting: {name} desk.\nfallback: Sorry?\n"
        )
    return AgentDirectory(load_agent_config(TEST_AGENT), agents)


@pytest.mark.parametrize(
    ("room", "attributes", "agent"),
    [
        # The dialed number wins over the trunk it came in on.
        (
            "call-a1",
            {"sip.trunkID": "ST_support", "sip.trunkPhoneNumber": "+15550001111"},
            "Billing",
        ),
        (
            "call-a2",
            {"sip.trunkID": "ST_support", "sip.trunkPhoneNumber": "+15550009999"},
            "Support",
        ),
        ("call-sales-7", {"sip.trunkID": "ST_other"}, "Sales"),
        ("call-a3", {"sip.trunkID": "ST_other", "sip.phoneNumber": "+15550001111"}, None),
    ],
    ids=["number", "trunk", "room", "default"],
)
async def test_a_signed_webhook_carries_the_sip_attributes_that_choose_the_agent(
    orchestrator: Orchestrator, tmp_path: Path, room: str, attributes: dict, agent: str | None
) -> None:
    attributes = {"sip.callStatus": "active", **attributes}
    assert (await post_webhook(orchestrator, livekit_event(room, attributes)))["dispatched"]
    (job,) = await orchestrator.jobs()
    assert job.sip is not None
    assert job.sip.trunk_id == attributes.get("sip.trunkID")
    assert job.sip.trunk_phone_number == attributes.get("sip.trunkPhoneNumber")
    agents = agents_dir(tmp_path)
    # sip.phoneNumber is the caller's number, never ours: it picks no agent.
    assert job_agent(job, agents).name == (agent or agents.default.name)


async def test_an_outbound_calls_callee_joining_gets_no_second_agent_and_its_named_agent_answers(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    placed = (
        await orchestrator.place({"to": CALLEE, "agent": "Sales", "ingress": "livekit"})
    ).json()
    joined = livekit_event(placed["room"], {"sip.trunkID": TRUNK, "sip.phoneNumber": CALLEE})
    assert (await post_webhook(orchestrator, joined))["dispatched"] is False
    (job,) = await orchestrator.jobs()
    assert job_agent(job, agents_dir(tmp_path)).name == "Sales"
