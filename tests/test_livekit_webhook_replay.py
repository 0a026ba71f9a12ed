"""A signed LiveKit webhook is taken once: its event id is remembered in Redis for as long as
its token verifies, and an event without an id (LiveKit always sends one) is refused."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from livekit import api as livekit_api
from pydantic import SecretStr

from conftest import API_KEY, RedisServer, start_redis
from switchboard.dispatch import keys
from switchboard.orchestrator.livekit_webhooks import TOKEN_LEEWAY_SECS
from switchboard.settings import Settings

LK_KEY, LK_SECRET = "webhook-key", "webhook-secret-that-is-long-enough-for-hs256"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    data_dir = Path(tempfile.mkdtemp(prefix="sb-webhook-redis-"))
    server = start_redis(data_dir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def orchestrator(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    from switchboard.orchestrator.app import create_orchestrator_app

    settings = Settings(
        redis_url=redis_server.url, api_keys=API_KEY, livekit_api_key=LK_KEY,
        livekit_api_secret=SecretStr(LK_SECRET), database_url=f"sqlite:///{tmp_path}/calls.db",
        recordings_url=str(tmp_path / "recordings"),
    )  # fmt: skip
    app = create_orchestrator_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://o") as http:
            yield http


def joined(room: str, event_id: str | None) -> bytes:
    event = {
        "event": "participant_joined",
        "createdAt": str(int(time.time())),
        "room": {"sid": "RM_" + uuid.uuid4().hex[:12], "name": room},
        "participant": {
            "sid": "PA_" + uuid.uuid4().hex[:12], "identity": "sip_+15105550100", "state": "ACTIVE",
            "kind": "SIP", "attributes": {"sip.phoneNumber": "+15105550100"},
        },
    }  # fmt: skip
    if event_id is not None:
        event["id"] = event_id
    return json.dumps(event).encode()


def sign(body: bytes, valid_for: dt.timedelta = dt.timedelta(minutes=5)) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return livekit_api.AccessToken(LK_KEY, LK_SECRET).with_ttl(valid_for).with_sha256(digest).to_jwt()


async def post(http: httpx.AsyncClient, body: bytes, token: str) -> httpx.Response:
    headers = {"Content-Type": "application/webhook+json", "Authorization": token}
    return await http.post("/webhooks/livekit", content=body, headers=headers)


async def test_a_signed_event_without_an_id_is_refused_every_time(orchestrator: httpx.AsyncClient) -> None:
    room = "call-" + uuid.uuid4().hex[:10]
    body = joined(room, event_id=None)
    token = sign(body)
    for _ in range(2):  # neither the first delivery nor its replay gets in
        response = await post(orchestrator, body, token)
        assert response.status_code == 400 and "no id" in response.json()["detail"]
    # Nothing was dispatched for the room: a proper event for it still gets its agent.
    fresh = joined(room, event_id="EV_" + uuid.uuid4().hex[:12])
    assert (await post(orchestrator, fresh, sign(fresh))).json()["dispatched"] is True


@pytest.mark.parametrize("valid_for", [dt.timedelta(minutes=5), dt.timedelta(hours=2)], ids=["5-min", "2-hours"])
async def test_an_event_id_is_remembered_as_long_as_its_token_verifies(
    orchestrator: httpx.AsyncClient, redis_server: RedisServer, valid_for: dt.timedelta
) -> None:
    event_id = "EV_" + uuid.uuid4().hex[:12]
    body = joined("call-" + uuid.uuid4().hex[:10], event_id)
    token = sign(body, valid_for)
    assert (await post(orchestrator, body, token)).status_code == 200
    replayed = await post(orchestrator, body, token)
    assert replayed.status_code == 401 and "already received" in replayed.json()["detail"]
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        remembered = await client.ttl(keys.webhook_event(event_id))
    finally:
        await client.aclose()
    # Until the token's expiry plus the verifier's leeway: a replay after that fails on exp.
    window = valid_for.total_seconds() + TOKEN_LEEWAY_SECS
    assert window - 5 <= remembered <= window + 2
