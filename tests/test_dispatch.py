"""Orchestrator + Redis + worker processes: placement, webhooks, tokens and a real call."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from xml.etree import ElementTree

import httpx
import pytest
from livekit import api as livekit_api
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conftest import (
    OPERATOR,
    REPLIES,
    Clip,
    RedisServer,
    Server,
    ServerGroup,
    agent_lines,
    first_media,
    metric,
    start_orchestrator,
    start_redis,
    stored_call,
    twilio_connected,
    twilio_start,
    twilio_stop,
    wait_for,
)
from switchboard.call_ids import call_id_for_twilio
from switchboard.dispatch import stream_tokens
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary
from switchboard.orchestrator.media_edge import STREAM_TOKEN_PARAM

API_KEY = "test-operator-key"
LK_KEY, LK_SECRET = "APItestkey", "test-livekit-secret-0123456789abcdef"
DEV_SECRET = "switchboard-dev-stream-secret"
ENV = {
    "SWITCHBOARD_API_KEY": API_KEY,
    "LIVEKIT_API_KEY": LK_KEY,
    "LIVEKIT_API_SECRET": LK_SECRET,
    "SWITCHBOARD_RESERVATION_TTL_SECS": "3",
}


@dataclass
class Pool:
    redis: RedisServer
    orchestrator: Server
    workers: list[Server]

    def stats(self) -> dict:
        return httpx.get(f"{self.orchestrator.base_url}/stats", headers={"X-API-Key": API_KEY}, timeout=5).json()

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.orchestrator.base_url, name, **labels)

    def health(self) -> dict:
        return httpx.get(f"{self.orchestrator.base_url}/health", timeout=5).json()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with ServerGroup() as group:
        redis = group.add(start_redis(tmp_path_factory.mktemp("redis")))
        orchestrator = group.add(start_orchestrator(redis.url, ENV))
        # Two workers of three slots: enough to see calls spread, without a third set of models.
        workers = group.start_workers(redis.url, ["w0", "w1"], max_calls=3, env=ENV)
        pool = Pool(redis, orchestrator, workers)
        wait_for(lambda: len(pool.stats()["workers"]) == 2, what="2 workers registered")
        yield pool


def call_form() -> dict[str, str]:
    return {"CallSid": "CA" + uuid.uuid4().hex, "AccountSid": "AC" + "0" * 32, "From": "+15105550100", "To": "+18005550199"}


def stream_url(twiml: str) -> str | None:
    stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
    return None if stream is None else stream.get("url")


def placed_on(twiml: str) -> str | None:
    """The worker a placed call's stream token names (the stream itself enters at the edge)."""
    stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
    if stream is None:
        return None
    token = next(p.get("value", "") for p in stream.findall("Parameter") if p.get("name") == STREAM_TOKEN_PARAM)
    return stream_tokens.read(DEV_SECRET, token).worker_id


def wait_idle(pool: Pool) -> None:
    wait_for(lambda: pool.stats()["active_calls"] == 0, limit_secs=15, what="all slots free")


async def test_calls_spread_across_workers_by_load_and_a_full_pool_answers_busy(pool: Pool) -> None:
    wait_idle(pool)
    async with httpx.AsyncClient(timeout=10) as client:
        # Seven calls in the same instant for six slots: placement is atomic in Redis.
        responses = await asyncio.gather(
            *[client.post(f"{pool.orchestrator.base_url}/twilio/voice", data=call_form()) for _ in range(7)]
        )
    urls = [stream_url(r.text) for r in responses]
    placed = [u for u in urls if u]
    assert len(placed) == 6, [r.text for r in responses]
    assert set(placed) == {_ws(pool.orchestrator, "/twilio/media")}, "every stream enters at the edge"
    workers = Counter(placed_on(r.text) for r in responses if stream_url(r.text))
    assert sorted(workers.values()) == [3, 3], workers
    busy = next(r.text for r, u in zip(responses, urls, strict=True) if u is None)
    assert "<Say>" in busy and "<Hangup" in busy
    assert pool.metric("calls_rejected_total", reason="no_capacity") == 1
    # Reservations whose stream never connects are given back.
    wait_idle(pool)


async def test_simulated_call_through_orchestrator_is_answered_by_a_worker(
    pool: Pool, speech_clips: dict[str, Clip]
) -> None:
    wait_idle(pool)
    script = CallScript(
        turns=[
            CallerTurn(audio=speech_clips["osr_us_0010_s05_8k.wav"].path),
            CallerTurn(audio=speech_clips["fw_stereo_right_16k.wav"].path, hangup_expected=True),
        ]
    )
    result = await run_call(pool.orchestrator.base_url, script, transcribe=False)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, format_summary(result)
    assert agent_lines(await stored_call(result.call_sid))[1:] == [REPLIES["food"], REPLIES["goodbye"]]
    call_id = call_id_for_twilio(result.call_sid)
    async with httpx.AsyncClient(timeout=5) as client:
        state = (await client.get(f"{pool.orchestrator.base_url}/calls/{call_id}", headers={"X-API-Key": API_KEY})).json()
        assert state["status"] == "completed" and state["completions"] == "1"
        records = [
            (await client.get(f"{w.base_url}/calls/{call_id}", headers={"X-API-Key": API_KEY})).status_code
            for w in pool.workers
        ]
    assert records.count(200) == 1, "exactly one worker ran the call"
    wait_idle(pool)


def _ws(server: Server, path: str) -> str:
    return server.base_url.replace("http://", "ws://") + path


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        stream_tokens.issue("some-other-secret", "call-x", "w0", 30),
        stream_tokens.issue(DEV_SECRET, "call-x", "w0", -1),  # expired
        stream_tokens.issue(DEV_SECRET, "call-x", "w1", 30),  # issued for another worker
    ],
    ids=["garbage", "forged", "expired", "other-worker"],
)
async def test_stream_with_bad_token_is_refused(pool: Pool, token: str) -> None:
    with pytest.raises(InvalidStatus) as excinfo:
        async with connect(_ws(pool.workers[0], f"/twilio/media/{token}"), open_timeout=5):
            pass
    assert excinfo.value.response.status_code == 403


async def test_a_stream_with_a_valid_token_is_answered_by_its_worker(pool: Pool) -> None:
    wait_idle(pool)
    call_sid, stream_sid = "CA" + uuid.uuid4().hex, "MZ" + uuid.uuid4().hex
    token = stream_tokens.issue(DEV_SECRET, call_id_for_twilio(call_sid), "w0", 30)
    async with connect(_ws(pool.workers[0], f"/twilio/media/{token}"), open_timeout=5) as ws:
        await ws.send(twilio_connected())
        await ws.send(twilio_start(call_sid, stream_sid))
        greeting = await first_media(ws)
        assert greeting["streamSid"] == stream_sid
        await ws.send(twilio_stop(call_sid, stream_sid))
    async with httpx.AsyncClient(timeout=5) as client:
        record = await client.get(f"{pool.workers[0].base_url}/calls/{call_sid}", headers=OPERATOR)
    assert record.status_code == 200 and record.json()["call_id"] == call_id_for_twilio(call_sid)
    wait_idle(pool)


def livekit_event(room: str, kind: str = "SIP", event_id: str | None = None) -> bytes:
    event = {
        "event": "participant_joined",
        "id": event_id or "EV_" + uuid.uuid4().hex[:12],
        "createdAt": str(int(time.time())),
        "room": {"sid": "RM_" + uuid.uuid4().hex[:12], "name": room},
        "participant": {
            "sid": "PA_" + uuid.uuid4().hex[:12],
            "identity": "sip_+15105550100",
            "state": "ACTIVE",
            "kind": kind,
            "attributes": {"sip.phoneNumber": "+15105550100", "sip.callStatus": "active"},
        },
    }
    return json.dumps(event).encode()


def sign_livekit(body: bytes, key: str = LK_KEY, secret: str = LK_SECRET) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return livekit_api.AccessToken(key, secret).with_sha256(digest).to_jwt()


async def post_livekit(pool: Pool, body: bytes, authorization: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/webhook+json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.post(f"{pool.orchestrator.base_url}/webhooks/livekit", content=body, headers=headers)


async def test_signed_livekit_webhook_dispatches_one_agent_per_room(pool: Pool) -> None:
    room = "call-" + uuid.uuid4().hex[:10]
    first = await post_livekit(pool, body := livekit_event(room), sign_livekit(body))
    assert first.status_code == 200 and first.json()["dispatched"] is True
    # LiveKit may report the participant again (new event id): still one agent for the room.
    again = await post_livekit(pool, body2 := livekit_event(room), sign_livekit(body2))
    assert again.status_code == 200 and again.json()["dispatched"] is False
    # Not a SIP caller, or not a call room: no agent.
    other = await post_livekit(pool, body3 := livekit_event(room + "x", kind="STANDARD"), sign_livekit(body3))
    assert other.json()["dispatched"] is False
    lobby = await post_livekit(pool, body4 := livekit_event("lobby"), sign_livekit(body4))
    assert lobby.json()["dispatched"] is False
    assert pool.metric("jobs_dispatched_total", kind="livekit_room") == 1


async def test_forged_unsigned_altered_and_replayed_livekit_webhooks_are_refused(pool: Pool) -> None:
    before = pool.metric("jobs_dispatched_total", kind="livekit_room")
    room = "call-" + uuid.uuid4().hex[:10]
    body = livekit_event(room)
    assert (await post_livekit(pool, body, None)).status_code == 401
    assert (await post_livekit(pool, body, sign_livekit(body, secret="not-the-secret"))).status_code == 401
    assert (await post_livekit(pool, body, "Bearer " + sign_livekit(body))).status_code == 401
    tampered = body.replace(b"+15105550100", b"+19995550100")
    assert (await post_livekit(pool, tampered, sign_livekit(body))).status_code == 401
    good = sign_livekit(body)
    assert (await post_livekit(pool, body, good)).status_code == 200
    assert (await post_livekit(pool, body, good)).status_code == 401  # replayed
    assert pool.metric("jobs_dispatched_total", kind="livekit_room") == before + 1


async def test_manual_dispatch_needs_the_api_key(pool: Pool) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        url = f"{pool.orchestrator.base_url}/manual/dispatch"
        assert (await client.post(url, json={"kind": "test"})).status_code == 401
        assert (await client.post(url, json={"kind": "test"}, headers={"X-API-Key": "wrong"})).status_code == 401
        bad = await client.post(url, json={"kind": "livekit_room", "room": "lobby"}, headers={"X-API-Key": API_KEY})
        assert bad.status_code == 422
        ok = await client.post(url, json={"kind": "test", "duration_secs": 0.2}, headers={"X-API-Key": API_KEY})
        assert ok.status_code == 200
        call_id = ok.json()["call_id"]
        state = await asyncio.to_thread(
            wait_for,
            lambda: (s := httpx.get(f"{pool.orchestrator.base_url}/calls/{call_id}", headers={"X-API-Key": API_KEY}).json())
            and s.get("status") == "completed" and s,
            10,
        )
    assert state["runs"] == "1" and state["completions"] == "1" and float(state["claim_ms"]) < 1000


async def test_health_and_stats_describe_the_pool(pool: Pool) -> None:
    health = pool.health()
    assert health == {"status": "ok", "redis": "ok", "live_workers": 2}
    stats = pool.stats()
    assert {w["worker_id"] for w in stats["workers"]} == {"w0", "w1"}
    assert all(w["heartbeat_age_secs"] < 2 for w in stats["workers"])
    assert stats["capacity"] == 6
    assert stats["dispatch_latency_ms"]["count"] >= 1
