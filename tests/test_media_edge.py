"""The media edge: Twilio streams enter at the orchestrator and are relayed to the worker.

Real processes on loopback: Redis, two orchestrators (one checking Twilio signatures), a real
worker, and a scriptable worker endpoint in the test (registered in Redis like a worker) to
drive closes and aborts the real worker would not make on demand.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
import redis.asyncio as aioredis
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import (
    REPLIES,
    Clip,
    Metrics,
    RedisServer,
    Server,
    ServerGroup,
    agent_lines,
    call_sid_in,
    free_port,
    scrape_metrics,
    start_orchestrator,
    start_redis,
    start_worker,
    stored_call,
    wait_for,
)
from switchboard.call_ids import call_id_for_twilio, new_call_id
from switchboard.dispatch import stream_tokens
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.models import CallStatus, WorkerInfo
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary
from switchboard.orchestrator.media_edge import STREAM_TOKEN_PARAM
from switchboard.settings import Settings
from switchboard.supervisor import plan_children

DEV_SECRET = "switchboard-dev-stream-secret"
AUTH_TOKEN = "edge-test-auth-token"
API_KEY = "edge-test-operator-key"
OPERATOR = {"X-API-Key": API_KEY}
# A webhook whose stream never comes frees its slot soon; call records are behind the key.
ENV = {"SWITCHBOARD_RESERVATION_TTL_SECS": "3", "SWITCHBOARD_API_KEY": API_KEY}


@dataclass
class EdgeStack:
    redis: RedisServer
    edge: Server  # no Twilio auth token: unsigned streams accepted
    signed_edge: Server  # TWILIO_AUTH_TOKEN set: streams must carry X-Twilio-Signature
    worker: Server

    def metrics(self, server: Server | None = None) -> Metrics:
        return scrape_metrics((server or self.edge).base_url, OPERATOR)

    def wait_idle(self) -> None:
        """No slot running or reserved anywhere."""
        stats = lambda: httpx.get(f"{self.edge.base_url}/stats", headers=OPERATOR, timeout=5).json()  # noqa: E731
        wait_for(lambda: stats()["active_calls"] == 0, limit_secs=20, what="all slots free")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    with ServerGroup() as group:
        redis = group.add(start_redis(tmp_path_factory.mktemp("redis")))
        edge = group.add(start_orchestrator(redis.url, ENV))
        signed = group.add(start_orchestrator(redis.url, {**ENV, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}))
        worker = group.add(start_worker(redis.url, "edge-w1", max_calls=1, env=ENV))
        yield EdgeStack(redis, edge, signed, worker)


# -- A worker endpoint the test scripts -------------------------------------------------------


@dataclass
class FakeWorker:
    """A WebSocket server registered in Redis as a worker (capacity 0: never placed on)."""

    worker_id: str
    port: int
    on_message: Callable[[ServerConnection, str | bytes], Awaitable[None]] | None = None
    paths: list[str] = field(default_factory=list)
    extensions: list[str | None] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    closed_with: asyncio.Future | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_received(self, count: int, limit_secs: float = 5.0) -> None:
        async with asyncio.timeout(limit_secs):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def handle(self, connection: ServerConnection) -> None:
        self.paths.append(connection.request.path)
        self.extensions.append(connection.request.headers.get("Sec-WebSocket-Extensions"))
        try:
            async for message in connection:
                self.received.append(message)
                self._arrived.set()
                if self.on_message is not None:
                    await self.on_message(connection, message)
        except ConnectionClosed:
            pass
        received = connection.protocol.close_rcvd
        assert self.closed_with is not None
        if not self.closed_with.done():
            self.closed_with.set_result(None if received is None else received.code)

    def token(self, call_id: str | None = None) -> str:
        return stream_tokens.issue(
            DEV_SECRET, call_id or new_call_id(), self.worker_id, 30
        )


@pytest.fixture
async def fake_worker(stack: EdgeStack) -> AsyncIterator[FakeWorker]:
    worker = FakeWorker("fake-" + uuid.uuid4().hex[:8], free_port())
    worker.closed_with = asyncio.get_running_loop().create_future()
    client = aioredis.Redis.from_url(stack.redis.url, decode_responses=True)
    registry = WorkerRegistry(client, worker_ttl_secs=300)
    now = time.time()
    info = WorkerInfo(
        worker_id=worker.worker_id, media_url=f"http://127.0.0.1:{worker.port}", capacity=0,
        pid=os.getpid(), started_at=now, heartbeat_at=now,
    )  # fmt: skip
    # The server offers permessage-deflate (websockets' default): the edge must not take it.
    async with serve(worker.handle, "127.0.0.1", worker.port):
        await registry.register(info)
        try:
            yield worker
        finally:
            await registry.deregister(worker.worker_id)
            await client.aclose()


def edge_url(server: Server) -> str:
    return server.base_url.replace("http://", "ws://") + "/twilio/media"


def connected_message() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(token: str | None, stream_sid: str = "MZ" + "1" * 32) -> str:
    params = {"CallSid": call_sid_in(token)}
    if token is not None:
        params[STREAM_TOKEN_PARAM] = token
    start = {"streamSid": stream_sid, "callSid": params["CallSid"], "accountSid": "AC" + "0" * 32,
             "tracks": ["inbound"], "customParameters": params,
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
    return json.dumps(
        {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": start}
    )


def media_message(n: int) -> str:
    payload = "/" * 212 + "w=="  # 160 bytes of μ-law, base64
    return json.dumps({"event": "media", "sequenceNumber": str(n + 1), "streamSid": "MZ" + "1" * 32,
                       "media": {"track": "inbound", "chunk": str(n), "timestamp": str(20 * n), "payload": payload}})  # fmt: skip


async def open_stream(url: str, token: str | None, **kwargs) -> ClientConnection:
    ws = await connect(url, compression=None, open_timeout=5, **kwargs)
    await ws.send(connected_message())
    await ws.send(start_message(token))
    return ws


async def close_code_of(ws: ClientConnection, limit_secs: float = 5.0) -> int | None:
    """Wait for the server to close the socket; the code it sent."""
    try:
        async with asyncio.timeout(limit_secs):
            async for _message in ws:
                pass
    except ConnectionClosed:
        pass
    received = ws.protocol.close_rcvd
    return None if received is None else received.code


async def post_form(url: str, form: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, data=form)


# -- Tests --------------------------------------------------------------------------------------


async def test_a_simulated_call_enters_at_the_edge_and_is_answered_by_the_internal_worker(
    stack: EdgeStack, speech_clips: dict[str, Clip]
) -> None:
    form = {"CallSid": "CA" + uuid.uuid4().hex, "From": "+15105550100", "To": "+18005550199"}
    twiml = (await post_form(f"{stack.edge.base_url}/twilio/voice", form)).text
    stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    assert stream.get("url") == edge_url(stack.edge), "Twilio is sent to the edge, not to a worker"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert stream_tokens.read(DEV_SECRET, params[STREAM_TOKEN_PARAM]).worker_id == "edge-w1"
    stack.wait_idle()

    before = stack.metrics()
    script = CallScript(
        turns=[
            CallerTurn(audio=speech_clips["osr_us_0010_s05_8k.wav"].path),
            CallerTurn(audio=speech_clips["fw_stereo_right_16k.wav"].path, hangup_expected=True),
        ]
    )
    result = await run_call(stack.edge.base_url, script, transcribe=False)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, format_summary(result)
    assert agent_lines(await stored_call(result.call_sid))[1:] == [REPLIES["food"], REPLIES["goodbye"]]
    async with httpx.AsyncClient(timeout=5) as client:
        record = await client.get(
            f"{stack.worker.base_url}/calls/{call_id_for_twilio(result.call_sid)}", headers={"X-API-Key": API_KEY}
        )
    assert record.status_code == 200, "the worker behind the edge ran the call"
    after = stack.metrics()
    relayed = after.value("media_edge_streams_total", result="relayed")
    assert relayed == before.value("media_edge_streams_total", result="relayed") + 1
    # The agent hung up: the worker closed normally and the edge passed 1000 on to the caller.
    closes = after.value("media_edge_closes_total", side="worker", code="1000")
    assert closes == before.value("media_edge_closes_total", side="worker", code="1000") + 1


@pytest.mark.parametrize("kind", ["missing", "garbage", "forged", "expired"])
async def test_a_bad_token_is_refused_at_the_edge_with_1008_before_any_worker_is_dialled(
    stack: EdgeStack, fake_worker: FakeWorker, kind: str
) -> None:
    # Forged and expired tokens name the scripted worker: had the edge let one through,
    # that worker would have seen a connection.
    token = {
        "missing": None,
        "garbage": "garbage",
        "forged": stream_tokens.issue("some-other-secret", "call-x", fake_worker.worker_id, 30),
        "expired": stream_tokens.issue(DEV_SECRET, "call-x", fake_worker.worker_id, -1),
    }[kind]
    before = stack.metrics().value("media_edge_streams_total", result="bad_token")
    ws = await open_stream(edge_url(stack.edge), token)
    assert await close_code_of(ws) == 1008
    assert stack.metrics().value("media_edge_streams_total", result="bad_token") == before + 1
    assert fake_worker.paths == []


async def test_frames_are_relayed_unchanged_both_ways_without_compression(
    stack: EdgeStack, fake_worker: FakeWorker
) -> None:
    async def echo(connection: ServerConnection, message: str | bytes) -> None:
        if isinstance(message, str) and '"media"' in message:
            await connection.send(message)

    fake_worker.on_message = echo
    token = fake_worker.token()
    # This client offers permessage-deflate: the edge must decline it.
    ws = await connect(edge_url(stack.edge), open_timeout=5)
    assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
    sent = [connected_message(), start_message(token)] + [media_message(n) for n in range(20)]
    for message in sent:
        await ws.send(message)
    echoed = [await asyncio.wait_for(ws.recv(), 5) for _ in range(20)]
    await ws.close()
    assert echoed == sent[2:]
    await asyncio.wait_for(fake_worker.closed_with, 5)
    assert fake_worker.received == sent, "byte-identical, in order, connected and start included"
    assert fake_worker.paths == [f"/twilio/media/{token}"]
    assert fake_worker.extensions == [None], "the internal hop offers no permessage-deflate"


async def test_the_worker_closing_passes_its_code_to_the_caller(
    stack: EdgeStack, fake_worker: FakeWorker
) -> None:
    async def close_when_started(connection: ServerConnection, message: str | bytes) -> None:
        if '"start"' in str(message):
            await connection.close(1012, "worker restarting")

    fake_worker.on_message = close_when_started
    ws = await open_stream(edge_url(stack.edge), fake_worker.token())
    assert await close_code_of(ws) == 1012
    assert (
        ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.reason == "worker restarting"
    )


async def test_a_worker_connection_that_dies_closes_the_caller_with_1011(
    stack: EdgeStack, fake_worker: FakeWorker
) -> None:
    async def die_mid_stream(connection: ServerConnection, message: str | bytes) -> None:
        if '"media"' in str(message):
            connection.transport.abort()  # no close frame: as if the process was killed

    fake_worker.on_message = die_mid_stream
    ws = await open_stream(edge_url(stack.edge), fake_worker.token())
    await ws.send(media_message(0))
    assert await close_code_of(ws) == 1011


@pytest.mark.parametrize(
    ("code", "expected"),
    [(1000, 1000), (4001, 4001), (None, 1001)],
    ids=["1000", "4001", "dropped"],
)
async def test_the_caller_hanging_up_closes_the_worker_hop_with_its_code(
    stack: EdgeStack, fake_worker: FakeWorker, code: int | None, expected: int
) -> None:
    ws = await open_stream(edge_url(stack.edge), fake_worker.token())
    await ws.send(media_message(0))
    await fake_worker.wait_received(3)
    if code is not None:
        await ws.close(code)
    else:
        ws.transport.abort()  # Twilio's TCP connection lost, no close frame
    # A hang-up's code is passed on as it is; a lost connection becomes 1001 "going away".
    assert await asyncio.wait_for(fake_worker.closed_with, 5) == expected


async def test_a_stream_for_a_worker_that_is_gone_is_closed_with_1011(stack: EdgeStack) -> None:
    token = stream_tokens.issue(DEV_SECRET, "call-gone", "no-such-worker", 30)
    before = stack.metrics().value("calls_rejected_total", reason="worker_lost")
    ws = await open_stream(edge_url(stack.edge), token)
    assert await close_code_of(ws) == 1011
    assert stack.metrics().value("calls_rejected_total", reason="worker_lost") == before + 1


async def test_any_edge_relays_any_stream_and_a_signed_edge_refuses_unsigned_streams(
    stack: EdgeStack, fake_worker: FakeWorker
) -> None:
    url = edge_url(stack.signed_edge)
    with pytest.raises(InvalidStatus) as refused:
        await open_stream(url, fake_worker.token())
    assert refused.value.response.status_code == 403
    # The public URL the signature covers is the one Twilio dialled (here: the edge's own).
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
    ws = await open_stream(
        url, fake_worker.token(), additional_headers={"X-Twilio-Signature": signature}
    )
    await ws.close()
    assert await asyncio.wait_for(fake_worker.closed_with, 5) == 1000
    assert len(fake_worker.paths) == 1


async def echo_media(connection: ServerConnection, message: str | bytes) -> None:
    if isinstance(message, str) and '"media"' in message:
        await connection.send(message)


@pytest.mark.parametrize("caller_stays", [False, True], ids=["call-ends-in-time", "drain-deadline"])
async def test_a_stopping_orchestrator_reports_not_ready_and_lets_relayed_streams_end(
    stack: EdgeStack, fake_worker: FakeWorker, caller_stays: bool
) -> None:
    fake_worker.on_message = echo_media
    edge = await asyncio.to_thread(
        start_orchestrator, stack.redis.url, {"SWITCHBOARD_DRAIN_TIMEOUT_SECS": "3"}
    )
    try:
        ws = await open_stream(edge_url(edge), fake_worker.token())
        edge.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(timeout=5) as client:
            async with asyncio.timeout(5):
                # Another process's state: polled, with a timeout.
                while (health := await client.get(f"{edge.base_url}/health")).status_code != 503:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        assert health.json()["draining"] is True
        # The stream goes on while the orchestrator drains.
        await ws.send(media_message(1))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["media"]["chunk"] == "1"
        if caller_stays:
            # Past the drain deadline (3 s) the server closes what is left, "service restart".
            assert await close_code_of(ws, limit_secs=15) == 1012
            assert await asyncio.wait_for(fake_worker.closed_with, 5) == 1012
        else:
            await ws.close()
            assert await asyncio.wait_for(fake_worker.closed_with, 5) == 1000
        assert await asyncio.to_thread(edge.process.wait, 15) == 0
    finally:
        edge.stop()


async def test_a_transfer_report_reaches_the_worker_holding_the_call_through_the_public_tier(
    stack: EdgeStack,
) -> None:
    call_sid = "CA" + uuid.uuid4().hex
    client = aioredis.Redis.from_url(stack.redis.url, decode_responses=True)
    # As the orchestrator records a call it placed on the real worker.
    await CallLedger(client, 600).record(call_id_for_twilio(call_sid), CallStatus.RESERVED, worker="edge-w1")
    await client.aclose()
    worker_metrics = lambda: stack.metrics(stack.worker)  # noqa: E731
    before = worker_metrics().value("call_transfers_total", outcome="busy")
    url = f"{stack.edge.base_url}/twilio/transfer-status?call={call_sid}"
    answer = await post_form(url, {"CallSid": call_sid, "DialCallStatus": "busy"})
    assert answer.status_code == 200 and "<Hangup" in answer.text
    assert "nobody could take your call" in answer.text, "the worker's own answer, relayed"
    assert worker_metrics().value("call_transfers_total", outcome="busy") == before + 1
    # A report for a call no worker holds is answered at the edge and reaches no worker.
    unknown = await post_form(
        f"{stack.edge.base_url}/twilio/transfer-status?call=CAnope", {"DialCallStatus": "busy"}
    )
    assert unknown.status_code == 200 and "<Hangup" in unknown.text and "nobody" not in unknown.text
    assert worker_metrics().value("call_transfers_total", outcome="busy") == before + 1


async def test_a_real_worker_killed_mid_call_closes_the_callers_socket_with_1011(
    stack: EdgeStack,
) -> None:
    """Last in the module: it kills the worker."""
    stack.wait_idle()
    form = {"CallSid": "CA" + uuid.uuid4().hex, "From": "+15105550100", "To": "+18005550199"}
    twiml = (await post_form(f"{stack.edge.base_url}/twilio/voice", form)).text
    stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    token = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}[STREAM_TOKEN_PARAM]
    # Placed by one orchestrator, the stream enters at the other: the edge holds no state.
    url = edge_url(stack.signed_edge)
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
    ws = await open_stream(url, token, additional_headers={"X-Twilio-Signature": signature})
    # The agent's greeting arriving through the edge proves the call is up on the worker.
    greeting = json.loads(await asyncio.wait_for(ws.recv(), 15))
    assert greeting["event"] == "media"
    stack.worker.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert await close_code_of(ws, limit_secs=10) == 1011
    assert time.monotonic() - killed_at < 3, "the caller learns at once, not after a ping timeout"


def test_switchboard_up_binds_workers_to_loopback_and_only_the_orchestrator_publicly(
    tmp_path: Path,
) -> None:
    settings = Settings(host="0.0.0.0", port=9100)
    children = plan_children(settings, workers=2, agent=None)
    orchestrator, *workers = children
    assert orchestrator.env["SWITCHBOARD_HOST"] == "0.0.0.0"
    assert [w.env["SWITCHBOARD_HOST"] for w in workers] == ["127.0.0.1", "127.0.0.1"]
    assert [w.env["SWITCHBOARD_WORKER_INTERNAL_URL"] for w in workers] == [
        "http://127.0.0.1:9101",
        "http://127.0.0.1:9102",
    ]


def test_a_worker_registers_an_internal_url_it_can_be_dialled_at() -> None:
    from switchboard.cli import _internal_url

    assert _internal_url(Settings(host="127.0.0.1", port=8081)) == "http://127.0.0.1:8081"
    configured = Settings(host="0.0.0.0", port=8081, worker_internal_url="http://10.0.0.7:8081/")
    assert _internal_url(configured) == "http://10.0.0.7:8081"
    # A wildcard bind is not an address: the machine's own is registered instead.
    wildcard = _internal_url(Settings(host="0.0.0.0", port=8081))
    assert (
        wildcard.startswith("http://") and "0.0.0.0" not in wildcard and wildcard.endswith(":8081")
    )
