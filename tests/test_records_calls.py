"""Call records end to end: a simulated Twilio call through a real orchestrator and worker is
saved with its transcript, latency and stereo recording, posted to a signed webhook, served by
the API only with the key, kept across an orchestrator restart, and deleted on request."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import soundfile as sf
import yaml

from conftest import (
    API_KEY,
    TEST_AGENT,
    Clip,
    RedisServer,
    Server,
    ServerGroup,
    start_orchestrator,
    start_redis,
    start_worker,
    wait_for,
)
from switchboard.call_ids import call_id_for_twilio, twilio_call_sid
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary
from switchboard.records.models import StoredCall
from switchboard.records.storage import LocalRecordingStorage
from switchboard.records.store import CallStore
from switchboard.records.webhooks import SIGNATURE_HEADER, verify_signature

SECRET = "whsec-e2e-0123456789abcdef"
DISCLOSURE = "This call may be recorded."
KEY = {"X-API-Key": API_KEY}


@dataclass
class Receiver:
    """A webhook receiver on loopback (threaded: the servers under test are other processes)."""

    bodies: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


@dataclass
class Stack:
    redis: RedisServer
    orchestrator: Server
    worker: Server
    receiver: Receiver
    env: dict[str, str]
    records_dir: Path
    servers: ServerGroup  # what the fixture stops: a restarted orchestrator joins it

    @property
    def url(self) -> str:
        return self.orchestrator.base_url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("records")
    receiver = Receiver()
    agent = yaml.safe_load(TEST_AGENT.read_text())
    agent["recording"] = {"enabled": True, "disclosure": DISCLOSURE}
    agent["webhook"] = {"url": receiver.start(), "secret": SECRET}
    agent_path = base / "agent.yaml"
    agent_path.write_text(yaml.safe_dump(agent))
    env = {
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{base}/switchboard.db",
        "SWITCHBOARD_RECORDINGS_URL": str(base / "recordings"),
        "SWITCHBOARD_AGENT_CONFIG": str(agent_path),
    }
    with ServerGroup() as group:
        group.add(receiver)
        redis = group.add(start_redis(tmp_path_factory.mktemp("redis")))
        orchestrator = group.add(start_orchestrator(redis.url, env))
        worker = group.add(start_worker(redis.url, "rec-w1", max_calls=1, env=env, agent=agent_path))
        yield Stack(redis, orchestrator, worker, receiver, env, base, group)


@pytest.fixture(scope="module")
async def finished_call(stack: Stack, speech_clips: dict[str, Clip]) -> str:
    """One call placed through the orchestrator; its call id once its record is stored."""
    script = CallScript(
        turns=[
            CallerTurn(
                audio=speech_clips["osr_us_0010_s05_8k.wav"].path
            ),  # "Rice is often served..."
            CallerTurn(audio=speech_clips["fw_stereo_right_16k.wav"].path, hangup_expected=True),
        ]
    )
    result = await run_call(stack.url, script, transcribe=False)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, format_summary(result)
    assert result.greeting is not None, format_summary(result)  # its disclosure: see the record
    call_id = call_id_for_twilio(result.call_sid)
    wait_for(
        lambda: (
            httpx.get(f"{stack.url}/calls/{call_id}", headers=KEY, timeout=5)
            .json()
            .get("transcript")
        ),
        limit_secs=30,
        what="the call's record saved",
    )
    return call_id


def test_the_call_is_stored_with_its_transcript_latency_and_recording(
    stack: Stack, finished_call: str
) -> None:
    record = StoredCall.model_validate(
        httpx.get(f"{stack.url}/calls/{finished_call}", headers=KEY, timeout=5).json()
    )
    assert record.ingress == "twilio" and record.outcome == "completed"
    assert record.call_sid and record.from_number and record.to_number
    assert record.ended_at is not None and record.ended_at > record.started_at
    agent_lines = [e.text for e in record.transcript if e.role == "agent"]
    user_lines = [e.text for e in record.transcript if e.role == "user"]
    assert agent_lines[0].startswith(DISCLOSURE), record.transcript
    assert "You talked about food." in agent_lines, record.transcript
    assert any("rice" in line.lower() for line in user_lines), record.transcript
    assert [e.t for e in record.transcript] == sorted(e.t for e in record.transcript)
    assert record.intents[-1] == "goodbye" and "food" in record.intents
    assert record.turns and all(t.bot_started_ms and t.bot_started_ms > 0 for t in record.turns)
    assert record.recording is not None and record.recording.channels == 2

    response = httpx.get(f"{stack.url}/calls/{finished_call}/recording", headers=KEY, timeout=5)
    assert response.status_code == 200 and response.headers["content-type"] == "audio/flac"
    data, rate = sf.read(io.BytesIO(response.content), dtype="int16", always_2d=True)
    assert data.shape[1] == 2 and rate == 16000
    assert abs(len(data) / rate - record.recording.duration_secs) < 0.01
    analysis = httpx.get(
        f"{stack.url}/calls/{finished_call}/analysis", headers=KEY, timeout=30
    ).json()
    assert len(analysis["caller_turns"]) >= 2 and len(analysis["agent_turns"]) >= 3, analysis
    measured = [g["gap_ms"] for g in analysis["gaps"] if g["gap_ms"] is not None]
    assert measured and all(0 < g < 3000 for g in measured), analysis["gaps"]
    # The recording's gaps agree with the agent's own per-turn latency (measured 880/600 ms
    # against 981/662 ms: energy end of speech vs VAD's, agent audio placed when it was sent).
    agent_ms = [t.bot_started_ms for t in record.turns]
    if len(agent_ms) == len(measured):  # VAD may split one clip into two turns
        assert all(abs(g - a) < 300 for g, a in zip(measured, agent_ms, strict=True)), (
            measured,
            agent_ms,
        )


def test_the_post_call_webhook_carried_the_signed_record(stack: Stack, finished_call: str) -> None:
    deliveries = [
        (headers, body)
        for headers, body in stack.receiver.bodies
        if finished_call in body.decode(errors="replace")
    ]
    assert len(deliveries) == 1
    headers, body = deliveries[0]
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
    sent = json.loads(body)
    assert sent["type"] == "call.ended" and sent["call"]["call_id"] == finished_call
    assert sent["call"]["transcript"] and sent["call"]["recording"]["key"].endswith(".flac")


def test_the_list_finds_the_call_by_number_and_outcome(stack: Stack, finished_call: str) -> None:
    record = httpx.get(f"{stack.url}/calls/{finished_call}", headers=KEY, timeout=5).json()
    page = httpx.get(
        f"{stack.url}/calls", params={"number": record["from_number"]}, headers=KEY, timeout=5
    ).json()
    assert finished_call in [c["call_id"] for c in page["calls"]]
    assert "transcript" not in page["calls"][0]  # the list is summaries
    none = httpx.get(
        f"{stack.url}/calls", params={"outcome": "failed"}, headers=KEY, timeout=5
    ).json()
    assert finished_call not in [c["call_id"] for c in none["calls"]]
    bad = httpx.get(f"{stack.url}/calls", params={"limit": 0}, headers=KEY, timeout=5)
    assert bad.status_code == 422 and "limit" in bad.text
    naive = httpx.get(
        f"{stack.url}/calls", params={"since": "2026-01-01T00:00:00"}, headers=KEY, timeout=5
    )
    assert naive.status_code == 422 and "since" in naive.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/calls"),
        ("GET", "/calls/{id}"),
        ("GET", "/calls/{id}/recording"),
        ("GET", "/calls/{id}/analysis"),
        ("DELETE", "/calls/{id}"),
        ("GET", "/webhooks/dead-letters"),
        ("POST", "/webhooks/dead-letters/1/replay"),
    ],
)
def test_nothing_of_a_call_is_served_without_the_key(
    stack: Stack, finished_call: str, method: str, path: str
) -> None:
    url = stack.url + path.format(id=finished_call)
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = httpx.request(method, url, headers=headers, timeout=5)
        assert response.status_code == 401, (method, path, response.text)
        assert finished_call not in response.text
    assert (
        httpx.get(f"{stack.url}/calls/{finished_call}", headers=KEY, timeout=5).status_code == 200
    )


def test_the_worker_serves_its_recent_calls_only_with_the_key(
    stack: Stack, finished_call: str
) -> None:
    sid = twilio_call_sid(finished_call)
    for path in ("/calls", f"/calls/{sid}"):
        assert httpx.get(stack.worker.base_url + path, timeout=5).status_code == 401
        assert (
            httpx.get(
                stack.worker.base_url + path, headers={"X-API-Key": "nope"}, timeout=5
            ).status_code
            == 401
        )
    assert (
        httpx.get(f"{stack.worker.base_url}/calls/{sid}", headers=KEY, timeout=5).status_code == 200
    )


async def test_a_dead_letter_is_listed_and_replayed_through_the_api(stack: Stack) -> None:
    store = CallStore(
        stack.env["SWITCHBOARD_DATABASE_URL"], LocalRecordingStorage(stack.records_dir)
    )
    await store.open()
    try:
        receiver_url = f"http://127.0.0.1:{stack.receiver.server.server_address[1]}/hook"  # type: ignore[union-attr]
        letter_id = await store.add_dead_letter(
            "call-dead", receiver_url, '{"dead": "letter"}', 5, "HTTP 503"
        )
    finally:
        await store.close()
    async with httpx.AsyncClient(base_url=stack.url, headers=KEY, timeout=10) as client:
        letters = (await client.get("/webhooks/dead-letters")).json()
        assert [(d["id"], d["call_id"], d["last_error"]) for d in letters] == [
            (letter_id, "call-dead", "HTTP 503")
        ]
        replayed = await client.post(f"/webhooks/dead-letters/{letter_id}/replay")
        assert replayed.status_code == 200, replayed.text
        assert (await client.get("/webhooks/dead-letters")).json() == []
        assert (await client.post(f"/webhooks/dead-letters/{letter_id}/replay")).status_code == 404
    headers, body = stack.receiver.bodies[-1]
    assert body == b'{"dead": "letter"}' and verify_signature(
        SECRET, headers[SIGNATURE_HEADER], body
    )


def test_without_a_configured_key_the_api_refuses_everyone(
    stack: Stack, finished_call: str
) -> None:
    open_env = {**stack.env, "SWITCHBOARD_API_KEY": ""}
    orchestrator = start_orchestrator(stack.redis.url, open_env)
    try:
        for headers in ({}, KEY, {"X-API-Key": ""}):
            response = httpx.get(
                f"{orchestrator.base_url}/calls/{finished_call}", headers=headers, timeout=5
            )
            assert response.status_code == 401 and "SWITCHBOARD_API_KEY" in response.text
    finally:
        orchestrator.stop()


def test_the_history_survives_an_orchestrator_restart_and_deletion_removes_the_audio(
    stack: Stack, finished_call: str
) -> None:
    stack.orchestrator.stop()
    # Until this test added it to the fixture's servers, the new orchestrator outlived the suite.
    stack.orchestrator = stack.servers.add(start_orchestrator(stack.redis.url, stack.env))
    record = httpx.get(f"{stack.url}/calls/{finished_call}", headers=KEY, timeout=5).json()
    assert record["transcript"]
    audio_file = stack.records_dir / "recordings" / record["recording"]["key"]
    assert audio_file.stat().st_size == record["recording"]["bytes"]

    assert (
        httpx.delete(f"{stack.url}/calls/{finished_call}", headers=KEY, timeout=5).status_code
        == 204
    )
    assert not audio_file.exists()
    assert (
        httpx.get(
            f"{stack.url}/calls/{finished_call}/recording", headers=KEY, timeout=5
        ).status_code
        == 404
    )
    page = httpx.get(f"{stack.url}/calls", headers=KEY, timeout=5).json()
    assert finished_call not in [c["call_id"] for c in page["calls"]]
    assert (
        httpx.delete(f"{stack.url}/calls/{finished_call}", headers=KEY, timeout=5).status_code
        == 404
    )
