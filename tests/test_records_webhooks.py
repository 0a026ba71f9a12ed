"""The post-call webhook against a real receiver on loopback: signed, retried with backoff
while the receiver fails, dead-lettered after the limit, replayable, never holding the call."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from switchboard.agent.config import AgentConfig
from switchboard.records.archive import CallArchive
from switchboard.records.capture import CallCapture
from switchboard.records.models import StoredCall, TranscriptEntry
from switchboard.records.storage import LocalRecordingStorage
from switchboard.records.store import CallStore
from switchboard.records.webhooks import SIGNATURE_HEADER, WebhookSender, sign, verify_signature
from switchboard.settings import Settings

SECRET = "whsec-test-0123456789abcdef"


@dataclass
class Receiver:
    """An HTTP server that answers 500 to the first ``failures`` requests, then 200."""

    failures: int
    url: str = ""
    requests: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((time.monotonic(), dict(request.headers), await request.read()))
        self.arrived.set()
        if len(self.requests) <= self.failures:
            return web.Response(status=500, text="receiver down")
        return web.Response(status=200, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver(request: pytest.FixtureRequest):
    server = Receiver(failures=getattr(request, "param", 0))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def store(tmp_path: Path):
    store = CallStore(f"sqlite:///{tmp_path}/db.sqlite", LocalRecordingStorage(tmp_path / "rec"))
    await store.open()
    yield store
    await store.close()


def a_call(call_id: str = "call-hook") -> StoredCall:
    return StoredCall(
        call_id=call_id,
        agent="receptionist",
        ingress="twilio",
        started_at=dt.datetime.now(dt.UTC),
        outcome="completed",
        transcript=[TranscriptEntry(role="user", text="What are your hours?", t=1.5)],
    )


def test_the_signature_verifies_only_the_signed_body_with_the_secret_and_recently() -> None:
    body = b'{"call": 1}'
    header = sign(SECRET, body)
    assert verify_signature(SECRET, header, body)
    assert not verify_signature(SECRET, header, b'{"call": 2}')
    assert not verify_signature("another-secret-0123456789", header, body)
    assert not verify_signature(SECRET, sign(SECRET, body, int(time.time()) - 3600), body)
    assert not verify_signature(SECRET, None, body)
    assert not verify_signature(SECRET, "t=abc,v1=00", body)


@pytest.mark.parametrize("receiver", [2], indirect=True)
async def test_a_failing_receiver_gets_retries_with_growing_delays_until_it_accepts(
    receiver: Receiver, store: CallStore
) -> None:
    sender = WebhookSender(store, max_attempts=4, backoff_secs=0.1, timeout_secs=2)
    try:
        payload = json.dumps({"type": "call.ended", "call": {"call_id": "call-hook"}})
        assert await sender.deliver(receiver.url, SECRET, "call-hook", payload) is True
    finally:
        await sender.close()
    assert len(receiver.requests) == 3
    times = [t for t, _h, _b in receiver.requests]
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert first_gap >= 0.1 and second_gap >= 0.2, (first_gap, second_gap)
    for _t, headers, body in receiver.requests:
        assert body == payload.encode()
        assert headers["Content-Type"] == "application/json"
        assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
    assert await store.dead_letters() == []


@pytest.mark.parametrize("receiver", [100], indirect=True)
async def test_a_webhook_that_never_arrives_is_dead_lettered_and_can_be_replayed(
    receiver: Receiver, store: CallStore
) -> None:
    sender = WebhookSender(store, max_attempts=3, backoff_secs=0.01, timeout_secs=2)
    try:
        assert await sender.deliver(receiver.url, SECRET, "call-hook", '{"n": 1}') is False
        assert len(receiver.requests) == 3
        [letter] = await store.dead_letters()
        assert (letter.call_id, letter.url, letter.attempts, letter.last_error) == (
            "call-hook",
            receiver.url,
            3,
            "HTTP 500",
        )
        assert await sender.replay(letter.id, SECRET) is False  # still down: kept, not duplicated
        assert [d.id for d in await store.dead_letters()] == [letter.id]

        receiver.failures = 0
        assert await sender.replay(letter.id, SECRET) is True
        _t, headers, body = receiver.requests[-1]
        assert body == b'{"n": 1}' and verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
        assert await store.dead_letters() == []
        assert await sender.replay(letter.id, SECRET) is None
    finally:
        await sender.close()


def _agent(url: str) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": "receptionist",
            "greeting": "Hello.",
            "fallback": "Sorry?",
            "webhook": {"url": url, "secret": SECRET},
        }
    )


def _settings(tmp_path: Path, **fields) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/archive.sqlite",
        recordings_url=str(tmp_path / "recordings"),
        webhook_backoff_secs=0.05,
        **fields,
    )


@pytest.mark.parametrize("receiver", [1], indirect=True)
async def test_the_archive_saves_the_call_then_posts_its_record_without_holding_anything_up(
    receiver: Receiver, tmp_path: Path
) -> None:
    archive = CallArchive(_settings(tmp_path), _agent(receiver.url))
    await archive.start()
    capture = CallCapture(agent="receptionist", ingress="twilio")
    started = time.monotonic()
    task = archive.submit(a_call(), capture)
    assert time.monotonic() - started < 0.05 and not task.done()
    await archive.flush()
    saved = await archive.store.get("call-hook")
    assert saved is not None and saved.transcript[0].text == "What are your hours?"
    assert len(receiver.requests) == 2
    _t, headers, body = receiver.requests[-1]
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
    sent = json.loads(body)
    assert sent["type"] == "call.ended" and sent["version"] == 1
    assert StoredCall.model_validate(sent["call"]) == saved
    await archive.stop()


@pytest.mark.parametrize("receiver", [1000], indirect=True)
async def test_stopping_the_archive_waits_for_webhooks_briefly_then_dead_letters_them(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, webhook_max_attempts=20)
    settings.webhook_backoff_secs = 5.0
    archive = CallArchive(settings, _agent(receiver.url))
    await archive.start()
    task = archive.submit(a_call(), CallCapture(agent="receptionist", ingress="twilio"))
    await asyncio.wait_for(receiver.arrived.wait(), timeout=5)  # the first attempt was made
    started = time.monotonic()
    await archive.stop(timeout_secs=0.3)
    assert task.cancelled()
    assert 0.3 <= time.monotonic() - started < 2
    # Not lost: the interrupted delivery waits in the dead-letter list for a replay.
    store = CallStore(settings.database_url, LocalRecordingStorage(tmp_path / "recordings"))
    await store.open()
    try:
        [letter] = await store.dead_letters()
        assert letter.call_id == "call-hook" and "shut down" in letter.last_error
        assert await store.get("call-hook") is not None  # the record itself was saved first
    finally:
        await store.close()
