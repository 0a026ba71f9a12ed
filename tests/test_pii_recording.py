"""A call with a spoken card number and a keyed patient number, saved through the archive as
a worker saves it: real speech (Piper, through 8 kHz µ-law), real keypad tones, the real
Whisper transcript; the stored record, the webhook and the recording hold none of them."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web

from conftest import REPO
from switchboard.agent.config import AgentConfig, WebhookConfig, load_agent_config
from switchboard.audio import read_wav, resample, ulaw_decode, ulaw_encode
from switchboard.call.record import CallRecord
from switchboard.call_log import CallLog, DigitsCollected, KeypadPress
from switchboard.dtmf_tones import digits_in
from switchboard.observability import metrics
from switchboard.privacy.detect import detect
from switchboard.records.archive import CallArchive, stored_call
from switchboard.records.models import TranscriptEntry
from switchboard.settings import Settings

RATE = 16000
CARD = "It's an American Express, three seven eight two, eight two two four six, three one zero zero zero five."
CARD_GROUPS = ("3782", "82246", "310005")
KEYED = "73914"
READ_BACK = "Thank you. I have patient number 7 3 9 1 4. How can I help you today?"


@pytest.fixture(scope="module")
def voices():
    from switchboard.engines.piper_tts import shared_piper
    from switchboard.engines.whisper import shared_whisper

    return shared_piper(), shared_whisper(threads=1)


def spoken(piper, text: str) -> np.ndarray:
    """Piper's speech as the agent hears a caller: 8 kHz µ-law, back at 16 kHz."""
    pcm = np.frombuffer(piper.synthesize(text), dtype=np.int16)
    return resample(ulaw_decode(ulaw_encode(resample(pcm, piper.sample_rate, 8000))), 8000, RATE)


def keyed(digits: str) -> np.ndarray:
    import pipecat.audio.dtmf

    folder = Path(pipecat.audio.dtmf.__file__).parent
    names = {"#": "pound", "*": "star"}
    return np.concatenate([read_wav(folder / f"dtmf-{names.get(d, d)}.wav", RATE) for d in digits])


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


async def test_a_call_with_a_spoken_card_and_keyed_digits_is_stored_sent_and_recorded_without_them(
    voices, receiver: Receiver, tmp_path: Path
) -> None:
    piper, whisper = voices
    agent = receptionist(receiver.url)
    said = spoken(piper, CARD)
    heard = whisper.transcribe_pcm16(said).text
    assert [e.type for e in detect(heard)] == ["card"], heard  # the STT did hear a card number
    caller = np.concatenate([quiet(0.5), said, quiet(0.5), keyed(KEYED + "#"), quiet(0.5)])
    assert digits_in(resample(caller, RATE, 8000)) == KEYED + "#"
    answer = np.frombuffer(piper.synthesize(READ_BACK), dtype=np.int16)

    archive = CallArchive(settings(tmp_path), agent)
    await archive.start()
    log = CallLog()
    log.add(KeypadPress(digit="4", intent="patient_number"))
    log.add(DigitsCollected(intent="patient_number", digits=KEYED))
    capture = archive.capture(ingress="twilio", from_number="+15005550006", agent=agent, log=log)
    assert capture.recorder is not None
    chunk = RATE // 50
    for i in range(0, len(caller), chunk):
        capture.recorder.caller(caller[i : i + chunk].tobytes(), RATE, 100.0 + i / RATE)
    capture.recorder.agent(answer.tobytes(), piper.sample_rate, 100.0 + len(caller) / RATE)
    capture.transcript += [
        TranscriptEntry(role="user", text=heard, t=0.5),
        TranscriptEntry(role="agent", text=READ_BACK, t=len(caller) / RATE),
    ]
    record = CallRecord(call_sid="CApii", stream_sid="MZpii", call_id="call-pii-audio", log=log, outcome="completed")
    archive.submit(stored_call(record, capture), capture)
    await archive.flush()
    try:
        stored = await archive.store.get("call-pii-audio")
        recording = await archive.store.recording("call-pii-audio")
    finally:
        await archive.stop()

    assert stored is not None and recording is not None
    [body] = receiver.bodies
    for text in (stored.model_dump_json(), body.decode()):
        for secret in (*CARD_GROUPS, KEYED, "7 3 9 1 4"):
            assert secret not in text, (secret, text)
    assert "[CARD]" in stored.transcript[0].text and "[KEYPAD]" in stored.transcript[1].text
    assert json.loads(body)["call"]["transcript"] == [e.model_dump() for e in stored.transcript]

    audio, rate = sf.read(io.BytesIO(recording[1]), dtype="int16", always_2d=True)
    assert digits_in(resample(audio[:, 0], rate, 8000)) == ""  # not one key left
    caller_now = whisper.transcribe_pcm16(audio[:, 0]).text
    agent_now = whisper.transcribe_pcm16(resample(audio[:, 1], rate, RATE)).text
    assert detect(caller_now) == [] and not any(g in caller_now for g in CARD_GROUPS), caller_now
    assert detect(agent_now, known_digits=[KEYED]) == [], agent_now
    assert "patient number" in agent_now.lower()  # the rest of the call is still there


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
