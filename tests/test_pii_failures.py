"""Redaction never fails a call: when it breaks, the archive stores the call without its words,
digits or recording, sends that, and counts it (tests/test_pii_call.py runs the working path
end to end)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from conftest import REPO
from switchboard.agent.config import AgentConfig, WebhookConfig, load_agent_config
from switchboard.call.record import CallRecord
from switchboard.call_log import CallLog, DigitsCollected
from switchboard.observability import metrics
from switchboard.records.archive import CallArchive, stored_call
from switchboard.records.models import TranscriptEntry
from switchboard.settings import Settings

RATE = 16000
KEYED = "73914"


def quiet(secs: float) -> np.ndarray:
    return np.zeros(int(RATE * secs), dtype=np.int16)


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver():
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def receptionist(url: str) -> AgentConfig:
    """The example receptionist (redaction on for every type, recording on), with a webhook."""
    agent = load_agent_config(REPO / "src" / "switchboard" / "agents" / "receptionist.yaml")
    return agent.model_copy(
        update={"webhook": WebhookConfig(url=url, secret="whsec-pii-0123456789abcdef")}  # type: ignore[arg-type]
    )


def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/calls.sqlite", recordings_url=str(tmp_path / "recordings"))


async def test_a_call_whose_redaction_fails_is_stored_without_its_words_and_counted(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver, tmp_path: Path
) -> None:
    import switchboard.records.redaction as redactor

    def broken(*_args, **_kwargs):
        raise RuntimeError("detector broke on: my card is 4111 1111 1111 1111")

    monkeypatch.setattr(redactor, "redact_call", broken)
    agent = receptionist(receiver.url)
    archive = CallArchive(settings(tmp_path), agent)
    await archive.start()
    before = metrics.PII_REDACTION_FAILURES._value.get()
    log = CallLog()
    log.add(DigitsCollected(intent="patient_number", digits=KEYED))
    capture = archive.capture(ingress="twilio", agent=agent, log=log)
    capture.recorder.caller(quiet(0.5).tobytes(), RATE, 1.0)  # type: ignore[union-attr]
    capture.transcript.append(TranscriptEntry(role="user", text="my card is 4111 1111 1111 1111", t=0.5))
    record = CallRecord(call_sid="CAfail", stream_sid="MZfail", call_id="call-pii-fail", log=log, outcome="completed")
    archive.submit(stored_call(record, capture), capture)
    await asyncio.wait_for(archive.flush(), 10)
    try:
        stored = await archive.store.get("call-pii-fail")
    finally:
        await archive.stop()
    assert stored is not None and stored.outcome == "completed"
    assert stored.transcript == [] and stored.recording is None
    assert "4111" not in stored.model_dump_json() and KEYED not in stored.model_dump_json()
    assert metrics.PII_REDACTION_FAILURES._value.get() == before + 1
    assert "4111" not in receiver.bodies[0].decode()
