"""Media stream tokens (issue 24): signed, short-lived, single-use, one per placement.

In-process: the token format and the rules for the stream secret; an orchestrator (the media
edge) on uvicorn in the test's own loop, with real Redis and a scripted worker endpoint. A real
worker process for the worker's own check of ``/twilio/media/{token}`` and for what a stream
may pick up of a call another stream left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from prometheus_client import REGISTRY
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import (
    API_KEY,
    OPERATOR,
    RedisServer,
    Server,
    call_sid_in,
    free_port,
    metric,
    start_redis,
    start_worker,
    wait_for,
)
from switchboard.call_ids import call_id_for_twilio, new_call_id
from switchboard.dispatch import stream_tokens
from switchboard.dispatch.models import WorkerInfo
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.dispatch.sessions import CallSession, CallSessions
from switchboard.dispatch.stream_tokens import StreamTokenError
from switchboard.errors import ConfigError
from switchboard.orchestrator.media_edge import STREAM_TOKEN_PARAM
from switchboard.settings import Settings

SECRET = "test-stream-secret-" + "9" * 32  # this deployment's own
DEV_SECRET = "switchboard-dev-stream-secret"  # printed in the source: anyone can sign with it


def _payload_of(token: str) -> str:
    return token.partition(".")[0]


def forged_tokens(worker_id: str) -> dict[str, str]:
    """Tokens an attacker can make without this deployment's secret, each naming ``worker_id``."""
    genuine = stream_tokens.issue(SECRET, "call-forged", worker_id, 30)
    return {
        "unsigned": _payload_of(genuine),
        "empty-signature": _payload_of(genuine) + ".",
        "wrong-signature": _payload_of(genuine) + "." + "A" * 43,
        "non-ascii-signature": _payload_of(genuine) + ".\u00e9",
        "dev-secret": stream_tokens.issue(DEV_SECRET, "call-forged", worker_id, 30),
        "expired": stream_tokens.issue(SECRET, "call-forged", worker_id, -1),
    }


# -- The token and the secret, in-process --------------------------------------------------------


def test_each_placement_gets_a_token_of_its_own_for_one_call_and_one_worker() -> None:
    first = stream_tokens.read(SECRET, stream_tokens.issue(SECRET, "call-1", "w1", 30))
    second = stream_tokens.read(SECRET, stream_tokens.issue(SECRET, "call-1", "w1", 30))
    assert (first.call_id, first.worker_id, first.resume) == ("call-1", "w1", 0)
    assert first.token_id != second.token_id, (
        "a fresh token id per placement: each is redeemed on its own"
    )
    assert len(first.token_id) >= 20
    assert first.expires_at == pytest.approx(time.time() + 30, abs=2)


@pytest.mark.parametrize("kind", list(forged_tokens("w1")))
def test_a_forged_or_expired_token_is_refused_with_its_reason(kind: str) -> None:
    with pytest.raises(StreamTokenError) as refused:
        stream_tokens.verify(SECRET, forged_tokens("w1")[kind], "w1")
    reason = {"unsigned": "malformed", "empty-signature": "malformed", "expired": "expired"}
    assert refused.value.reason == reason.get(kind, "bad_signature")


def test_the_development_secret_is_refused_off_loopback_and_warned_about_on_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from loguru import logger

    for host in ("0.0.0.0", "10.0.0.7", "::"):
        with pytest.raises(ConfigError, match="SWITCHBOARD_STREAM_SECRET"):
            stream_tokens.check_secret(DEV_SECRET, host)
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        stream_tokens.check_secret(DEV_SECRET, "127.0.0.1")
        assert any("development value" in w for w in warnings), warnings
        warnings.clear()
        stream_tokens.check_secret(SECRET, "0.0.0.0")  # a deployment's own secret: any bind
        assert warnings == []
    finally:
        logger.remove(sink)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[Settings]]:
    """``switchboard`` commands run in-process, stopping where they would start serving: the
    settings each would have served with are collected."""
    from switchboard import supervisor
    from switchboard.http import serving
    from switchboard.observability import logging as sb_logging
    from switchboard.settings import get_settings

    served: list[Settings] = []
    monkeypatch.setattr(serving, "serve", lambda app, settings, **_: served.append(settings))
    monkeypatch.setattr(
        supervisor.Supervisor, "run", lambda self: served.append(self.settings) or 0
    )
    monkeypatch.setattr(sb_logging, "configure_logging", lambda *a, **k: None)
    monkeypatch.setenv("SWITCHBOARD_API_KEY", API_KEY)
    monkeypatch.setenv("SWITCHBOARD_DATABASE_URL", f"sqlite:///{tmp_path}/calls.db")
    monkeypatch.setenv("SWITCHBOARD_RECORDINGS_URL", str(tmp_path / "recordings"))
    monkeypatch.setenv("SWITCHBOARD_STREAM_SECRET", "placeholder")
    # Restored (unset) after the test, whatever sets it meanwhile.
    monkeypatch.delenv("SWITCHBOARD_STREAM_SECRET")
    get_settings.cache_clear()
    umask = os.umask(0o022)  # `up` sets an owner-only umask for the process it runs in
    os.umask(umask)
    yield served
    os.umask(umask)
    get_settings.cache_clear()


def test_an_orchestrator_or_worker_with_the_development_secret_on_a_public_bind_does_not_start(
    cli_env: list[Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from switchboard.cli import main

    monkeypatch.setenv("SWITCHBOARD_HOST", "0.0.0.0")
    assert main(["orchestrator", "--port", str(free_port())]) == 2
    assert main(["worker", "--port", str(free_port()), "--worker-id", "w-public"]) == 2
    assert cli_env == [], "nothing was served"
    assert "SWITCHBOARD_STREAM_SECRET is the development value" in capsys.readouterr().err


def test_switchboard_up_makes_one_stream_secret_per_deployment_in_an_owner_only_file(
    cli_env: list[Settings], tmp_path: Path
) -> None:
    from switchboard.cli import main
    from switchboard.supervisor import plan_children

    data_dir = tmp_path / "var"
    assert main(["up", "--data-dir", str(data_dir), "--workers", "1"]) == 0
    secret_file = data_dir / "stream-secret"
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32 and secret != DEV_SECRET  # 24 random bytes, base64url
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    (settings,) = cli_env
    assert settings.stream_secret.get_secret_value() == secret
    # Every child (the orchestrator signing, the workers checking) is started with it.
    assert {c.env["SWITCHBOARD_STREAM_SECRET"] for c in plan_children(settings, 2, None)} == {
        secret
    }
    # The next start keeps it.
    os.environ.pop("SWITCHBOARD_STREAM_SECRET")
    assert main(["up", "--data-dir", str(data_dir), "--workers", "1"]) == 0
    assert cli_env[1].stream_secret.get_secret_value() == secret


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("tokens-redis"))
    yield server
    server.stop()


# -- The check both hops make (StreamRedemptions.admit), in-process on real Redis -----------------


@pytest.fixture
async def redemptions(redis_server: RedisServer):
    from switchboard.dispatch.redemptions import StreamRedemptions

    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield StreamRedemptions(client)
    await client.aclose()


@pytest.mark.parametrize("kind", [*forged_tokens("w1"), "other-worker"])
async def test_a_worker_admits_no_forged_expired_or_foreign_token(redemptions, kind: str) -> None:
    token = (
        stream_tokens.issue(SECRET, "call-x", "w2", 30)
        if kind == "other-worker"
        else forged_tokens("w1")[kind]
    )
    with pytest.raises(StreamTokenError):
        await redemptions.admit(SECRET, token, "worker", worker_id="w1")


async def test_of_many_sockets_on_one_token_each_hop_admits_exactly_one(redemptions) -> None:
    token = stream_tokens.issue(SECRET, new_call_id(), "w1", 30)
    for hop in ("edge", "worker"):  # the same genuine stream passes both hops, once each
        tries = await asyncio.gather(
            *(redemptions.admit(SECRET, token, hop, worker_id="w1") for _ in range(10)),
            return_exceptions=True,
        )
        admitted = [t for t in tries if not isinstance(t, BaseException)]
        assert len(admitted) == 1 and admitted[0].call_id.startswith("call-"), tries
        assert {e.reason for e in tries if isinstance(e, StreamTokenError)} == {"reused"}
    # Later (the stream closed): still used.
    with pytest.raises(StreamTokenError, match="already used"):
        await redemptions.admit(SECRET, token, "worker", worker_id="w1")


# -- The media edge, in-process ----------------------------------------------------------------


@dataclass
class Edge:
    url: str  # the public media WebSocket
    base_url: str


@pytest.fixture(scope="module")
async def edge(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    """An orchestrator with this deployment's secret, served by uvicorn in the test's loop."""
    from switchboard.orchestrator.app import create_orchestrator_app

    data = tmp_path_factory.mktemp("edge")
    port = free_port()
    settings = Settings(
        host="127.0.0.1", port=port, redis_url=redis_server.url, stream_secret=SecretStr(SECRET),
        api_key=SecretStr(API_KEY), database_url=f"sqlite:///{data}/calls.db",
        recordings_url=str(data / "recordings"), media_start_timeout_secs=3,
    )  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(create_orchestrator_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", ws="websockets-sansio"))  # fmt: skip
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        # uvicorn sets a flag when it listens; it has no event to wait on.
        while not server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    yield Edge(f"ws://127.0.0.1:{port}/twilio/media", f"http://127.0.0.1:{port}")
    server.should_exit = True
    await serving


@dataclass
class ScriptedWorker:
    """A WebSocket endpoint registered in Redis as a worker: counts the streams relayed to it."""

    worker_id: str
    port: int
    paths: list[str] = field(default_factory=list)

    async def handle(self, connection: ServerConnection) -> None:
        self.paths.append(connection.request.path)
        try:
            async for _message in connection:
                pass
        except ConnectionClosed:
            pass


@pytest.fixture
async def worker(redis_server: RedisServer) -> AsyncIterator[ScriptedWorker]:
    scripted = ScriptedWorker("scripted-" + uuid.uuid4().hex[:8], free_port())
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    registry = WorkerRegistry(client, worker_ttl_secs=300)
    now = time.time()
    info = WorkerInfo(
        worker_id=scripted.worker_id, media_url=f"http://127.0.0.1:{scripted.port}", capacity=0,
        pid=os.getpid(), started_at=now, heartbeat_at=now,
    )  # fmt: skip
    async with serve(scripted.handle, "127.0.0.1", scripted.port):
        await registry.register(info)
        try:
            yield scripted
        finally:
            await registry.deregister(scripted.worker_id)
            await client.aclose()


def start_message(token: str, call_sid: str | None = None) -> str:
    call_sid = call_sid or call_sid_in(token)
    stream_sid = "MZ" + uuid.uuid4().hex
    start = {"streamSid": stream_sid, "callSid": call_sid, "accountSid": "AC" + "0" * 32, "tracks": ["inbound"],
             "customParameters": {"CallSid": call_sid, STREAM_TOKEN_PARAM: token},
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
    return json.dumps(
        {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": start}
    )


async def open_stream(url: str, token: str, call_sid: str | None = None) -> ClientConnection:
    ws = await connect(url, compression=None, open_timeout=5)
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(start_message(token, call_sid))
    return ws


async def close_of(ws: ClientConnection, limit_secs: float = 3.0) -> tuple[int, str] | None:
    """The code and reason the server closed the socket with; None if it stayed open."""
    try:
        async with asyncio.timeout(limit_secs):
            async for _message in ws:
                pass
    except TimeoutError:
        return None
    except ConnectionClosed:
        pass
    received = ws.protocol.close_rcvd
    return None if received is None else (received.code, received.reason)


def refused(hop: str, reason: str) -> float:
    """``stream_tokens_refused_total`` of this process (the in-process edge)."""
    return (
        REGISTRY.get_sample_value("stream_tokens_refused_total", {"hop": hop, "reason": reason})
        or 0.0
    )


REUSED = (1008, "stream token already used")


@pytest.mark.parametrize("kind", list(forged_tokens("w1")))
async def test_the_edge_refuses_a_forged_token_with_1008_and_dials_no_worker(
    edge: Edge, worker: ScriptedWorker, kind: str
) -> None:
    ws = await open_stream(edge.url, forged_tokens(worker.worker_id)[kind])
    closed = await close_of(ws)
    assert closed is not None and closed[0] == 1008, closed
    assert worker.paths == []


async def test_the_edge_refuses_a_token_whose_stream_already_closed(
    edge: Edge, worker: ScriptedWorker
) -> None:
    token = stream_tokens.issue(SECRET, new_call_id(), worker.worker_id, 30)
    ws = await open_stream(edge.url, token)
    await asyncio.to_thread(wait_for, lambda: worker.paths, 5, 0.02, "the stream relayed")
    await ws.close()
    before = refused("edge", "reused")
    # Taken for a "resume" before issue 24: a second call on the same token, same call id.
    again = await open_stream(edge.url, token)
    assert await close_of(again) == REUSED
    assert len(worker.paths) == 1
    assert refused("edge", "reused") == before + 1


async def test_two_sockets_at_once_on_one_token_get_one_stream(
    edge: Edge, worker: ScriptedWorker
) -> None:
    token = stream_tokens.issue(SECRET, new_call_id(), worker.worker_id, 30)
    sockets = await asyncio.gather(open_stream(edge.url, token), open_stream(edge.url, token))
    closes = await asyncio.gather(*(close_of(ws) for ws in sockets))
    assert sorted(closes, key=str) == sorted([None, REUSED], key=str), closes
    assert len(worker.paths) == 1
    for ws in sockets:
        await ws.close()


OTHER_CALL = (1008, "stream token is for another call")


async def test_one_token_cannot_carry_several_calls(edge: Edge, worker: ScriptedWorker) -> None:
    call_sid = "CA" + uuid.uuid4().hex
    token = stream_tokens.issue(SECRET, call_id_for_twilio(call_sid), worker.worker_id, 30)
    # Four different calls presenting one token at once: it filled a worker before issue 24.
    calls = [call_sid] + ["CA" + uuid.uuid4().hex for _ in range(3)]
    sockets = await asyncio.gather(*(open_stream(edge.url, token, sid) for sid in calls))
    closes = await asyncio.gather(*(close_of(ws) for ws in sockets))
    assert closes == [None, OTHER_CALL, OTHER_CALL, OTHER_CALL], closes
    assert len(worker.paths) == 1
    for ws in sockets:
        await ws.close()


async def test_a_token_in_another_calls_stream_is_refused_and_left_unredeemed(
    edge: Edge, worker: ScriptedWorker
) -> None:
    call_sid = "CA" + uuid.uuid4().hex
    token = stream_tokens.issue(SECRET, call_id_for_twilio(call_sid), worker.worker_id, 30)
    before = refused("edge", "other_call")
    lifted = await open_stream(edge.url, token, "CA" + uuid.uuid4().hex)
    assert await close_of(lifted) == OTHER_CALL
    assert worker.paths == [] and refused("edge", "other_call") == before + 1
    # The call it was placed for still gets its stream.
    genuine = await open_stream(edge.url, token, call_sid)
    assert await close_of(genuine, limit_secs=1.0) is None
    assert len(worker.paths) == 1
    await genuine.close()


# -- A real worker's own /twilio/media/{token} ---------------------------------------------------


@pytest.fixture(scope="module")
def real_worker(redis_server: RedisServer) -> Iterator[Server]:
    worker = start_worker(
        redis_server.url, "tokens-w1", max_calls=2,
        env={"SWITCHBOARD_STREAM_SECRET": SECRET, "SWITCHBOARD_API_KEY": API_KEY},
    )  # fmt: skip
    yield worker
    worker.stop()


def worker_media(worker: Server, token: str) -> str:
    return worker.base_url.replace("http://", "ws://") + f"/twilio/media/{token}"


def worker_refused(worker: Server, reason: str) -> float:
    return metric(worker.base_url, "stream_tokens_refused_total", hop="worker", reason=reason)


def wait_worker_idle(worker: Server) -> None:
    active = lambda: httpx.get(f"{worker.base_url}/health", timeout=5).json()["active_calls"]  # noqa: E731
    wait_for(lambda: active() == 0, limit_secs=20, what="the worker idle")


@pytest.mark.parametrize("kind", list(forged_tokens("w1")))
async def test_the_worker_refuses_a_forged_token_itself(real_worker: Server, kind: str) -> None:
    with pytest.raises(InvalidStatus) as refused_:
        async with connect(
            worker_media(real_worker, forged_tokens("tokens-w1")[kind]), open_timeout=5
        ):
            pass
    assert refused_.value.response.status_code == 403


async def test_the_worker_takes_one_stream_per_token_then_or_at_once(real_worker: Server) -> None:
    await asyncio.to_thread(wait_worker_idle, real_worker)
    before = await asyncio.to_thread(worker_refused, real_worker, "reused")
    call_sid = "CA" + uuid.uuid4().hex
    token = stream_tokens.issue(SECRET, call_id_for_twilio(call_sid), "tokens-w1", 30)
    url = worker_media(real_worker, token)
    # Two sockets of the call at once: one gets the call, the other is refused once its start
    # names the call (the worker redeems a token only then).
    sockets = await asyncio.gather(open_stream(url, token, call_sid), open_stream(url, token, call_sid))
    closes = await asyncio.gather(*(close_of(ws) for ws in sockets))
    assert sorted(closes, key=str) == sorted([None, REUSED], key=str), closes
    for ws in sockets:
        await ws.close()
    # A third after the call's stream closed: refused as well.
    assert await close_of(await open_stream(url, token, call_sid)) == REUSED
    assert await asyncio.to_thread(worker_refused, real_worker, "reused") == before + 2
    await asyncio.to_thread(wait_worker_idle, real_worker)


async def test_the_worker_refuses_a_token_in_another_calls_stream_and_leaves_it_to_its_own(
    real_worker: Server,
) -> None:
    await asyncio.to_thread(wait_worker_idle, real_worker)
    before = await asyncio.to_thread(worker_refused, real_worker, "other_call")
    call_sid = "CA" + uuid.uuid4().hex
    token = stream_tokens.issue(SECRET, call_id_for_twilio(call_sid), "tokens-w1", 30)
    lifted = await open_stream(worker_media(real_worker, token), token, "CA" + uuid.uuid4().hex)
    assert await close_of(lifted, limit_secs=5) == OTHER_CALL
    assert await asyncio.to_thread(worker_refused, real_worker, "other_call") == before + 1
    # The call it was placed for still gets its stream: the refusal did not spend the token's
    # redemption on this hop (before, the worker redeemed it before reading start: HTTP 403).
    genuine = await open_stream(worker_media(real_worker, token), token, call_sid)
    async with asyncio.timeout(20):
        while json.loads(await genuine.recv()).get("event") != "media":
            pass
    await genuine.close()
    await asyncio.to_thread(wait_worker_idle, real_worker)


async def _events_of_a_call_on(worker: Server, token: str, call_sid: str) -> list[dict]:
    """Run a call on the worker until the agent speaks, hang up; the worker's events of it."""
    async with connect(worker_media(worker, token), open_timeout=5) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(start_message(token, call_sid))
        async with asyncio.timeout(20):
            while json.loads(await ws.recv()).get("event") != "media":
                pass
    response = await asyncio.to_thread(
        wait_for,
        lambda: (r := httpx.get(f"{worker.base_url}/calls/{call_sid}", headers=OPERATOR, timeout=5)).status_code
        == 200 and r.json()["outcome"] != "active" and r,
        20, 0.1, "the call's record",
    )  # fmt: skip
    return response.json()["events"]


async def test_only_a_resume_placement_picks_up_what_an_earlier_stream_of_the_call_left(
    real_worker: Server, redis_server: RedisServer
) -> None:
    await asyncio.to_thread(wait_worker_idle, real_worker)
    call_sid = "CA" + uuid.uuid4().hex
    call_id = call_id_for_twilio(call_sid)
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        history = [
            {"role": "user", "content": "my account number is 1234"},
            {"role": "assistant", "content": "Thanks."},
        ]
        await CallSessions(client, 600).save(
            CallSession(call_id=call_id, agent="x", history=history), "gone-w"
        )
    finally:
        await client.aclose()
    # A token from /twilio/voice (resume 0) naming a call that has a conversation stored: the
    # stream starts afresh (before issue 24 it loaded the 2 messages and said so).
    fresh = stream_tokens.issue(SECRET, call_id, "tokens-w1", 30)
    events = await _events_of_a_call_on(real_worker, fresh, call_sid)
    assert not any(e.get("event") == "resumed" for e in events), events
    await asyncio.to_thread(wait_worker_idle, real_worker)
    # The placement by /twilio/resume (resume 1) carries the conversation on.
    resumed = stream_tokens.issue(SECRET, call_id, "tokens-w1", 30, resume=1)
    events = await _events_of_a_call_on(real_worker, resumed, call_sid)
    assert any(e.get("event") == "resumed" for e in events), events
    await asyncio.to_thread(wait_worker_idle, real_worker)
