"""End to end over a Twilio media stream: a caller says a card number, keys a patient number
(Twilio's DTMF events) and hangs up; the stored record, the post-call webhook, the recording
and the server's log hold none of it. And keys carried in-band, as tones in the caller's audio,
are masked in a recording.

The agent is the example receptionist's redaction on an agent of the session's signed server
(its agents directory is reloaded while it runs); speech is Piper's through 8 kHz µ-law.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

import conftest
from conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, SignedAgent, stored_call, wait_for
from switchboard.audio import read_wav, resample, write_wav
from switchboard.dtmf_tones import digits_in
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.privacy.detect import detect

PII_LINE = "+15005550109"
# Said without pauses, so it is one turn (a number said in groups over several turns is
# tests/test_pii_detection.py's): each pause would be a turn the agent answers.
CARD = "My American Express card is three seven eight two eight two two four six three one zero zero zero five."
CARD_GROUPS = ("3782", "82246", "310005")
KEYED = "73914"


class Hooks(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        Hooks.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture(scope="module")
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def pii_line(signed_agent: SignedAgent, webhook: str) -> Iterator[str]:
    """An agent for PII_LINE in the server's agents directory: the receptionist's redaction,
    recording and a webhook, a keypad key that collects a patient number."""
    path = signed_agent.agents_dir / "pii.yaml"
    path.write_text(yaml.safe_dump({
        "name": "PII test agent", "numbers": [PII_LINE],
        "greeting": "Hello, this is the front desk.", "fallback": "Sorry, I did not get that.",
        "keypad": {"options": {"4": "patient_number", "9": "goodbye"}},
        "intents": [
            {"name": "card", "phrases": ["card", "express", "visa"], "reply": "Thank you, I have noted your card."},
            {"name": "patient_number", "phrases": ["patient number"], "reply": "Please key your patient number.",
             "collect_digits": {"max_digits": 8, "reply": "Thank you. I have patient number {digits}."}},
            {"name": "goodbye", "phrases": ["goodbye"], "reply": "Goodbye!", "end_call": True},
        ],
        "recording": {"enabled": True},
        "webhook": {"url": webhook, "secret": "whsec-pii-0123456789abcdef"},
        "redaction": {"enabled": True},
    }))  # fmt: skip
    try:
        yield PII_LINE
    finally:
        path.unlink()


def keyed_tones(digits: str, rate: int) -> np.ndarray:
    """Pipecat's DTMF tones for ``digits`` (as a phone line carries keys in-band)."""
    import pipecat.audio.dtmf

    folder = Path(pipecat.audio.dtmf.__file__).parent
    names = {"#": "pound", "*": "star"}
    return np.concatenate([read_wav(folder / f"dtmf-{names.get(d, d)}.wav", rate) for d in digits])


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The caller's speech (Piper) as an 8 kHz WAV."""
    from switchboard.engines.piper_tts import shared_piper

    folder = tmp_path_factory.mktemp("pii-clips")
    piper = shared_piper()
    speech = resample(np.frombuffer(piper.synthesize(CARD), dtype=np.int16), piper.sample_rate, 8000)
    write_wav(folder / "card.wav", speech, 8000)
    return {"card": folder / "card.wav"}


async def test_a_call_with_a_spoken_card_and_keyed_digits_leaves_none_of_them_behind(
    signed_agent: SignedAgent, pii_line: str, clips: dict[str, Path]
) -> None:
    script = CallScript(
        to_number=pii_line,
        turns=[
            CallerTurn(audio=clips["card"]),
            CallerTurn(dtmf="4"),  # menu: patient number
            CallerTurn(dtmf=KEYED + "#"),
            CallerTurn(dtmf="9", hangup_expected=True),
        ],
    )
    wait_for(lambda: (signed_agent.agents_dir / "pii.yaml").exists(), what="the agent file")
    result = await run_call(
        signed_agent.base_url, script, transcribe=False, auth_token=TWILIO_AUTH_TOKEN, account_sid=TWILIO_ACCOUNT_SID
    )
    record = await stored_call(result.call_sid)
    assert record.agent == "PII test agent", record.agent
    heard = " ".join(e.text for e in record.transcript if e.role == "user")
    assert "[CARD]" in heard, record.transcript  # the STT heard the card number, and it was taken out
    said = [(e.role, e.text) for e in record.transcript]
    assert ("agent", "Thank you. I have patient number [KEYPAD].") in said, said
    assert [e.digits for e in record.events if e.event == "digits"] == ["[KEYPAD]"], record.events

    wait_for(lambda: Hooks.bodies, 30, what="the post-call webhook")
    body = Hooks.bodies[-1].decode()
    assert json.loads(body)["call"]["call_id"] == record.call_id
    log = signed_agent.server.log()
    for where, text in (("record", record.model_dump_json()), ("webhook", body), ("log", log)):
        for secret in (*CARD_GROUPS, KEYED, "7 3 9 1 4"):
            assert secret not in text, f"{secret} in the {where}"

    found = await conftest._records_store.recording(record.call_id)  # type: ignore[union-attr]
    assert found is not None
    audio, rate = sf.read(io.BytesIO(found[1]), dtype="int16", always_2d=True)
    assert digits_in(resample(audio[:, 0], rate, 8000)) == ""  # not one key left in the recording
    from switchboard.engines.whisper import shared_whisper

    whisper = shared_whisper(threads=1)
    for channel in (0, 1):
        now = whisper.transcribe_pcm16(audio[:, channel]).text
        assert detect(now, known_digits=[KEYED]) == [] and not any(g in now for g in CARD_GROUPS), now


def test_keypad_tones_in_a_recording_are_masked_and_speech_is_kept() -> None:
    from switchboard.engines.piper_tts import shared_piper
    from switchboard.records.recording_redaction import redact_recording

    piper = shared_piper()
    speech = resample(np.frombuffer(piper.synthesize("What are your opening hours?"), dtype=np.int16), piper.sample_rate, 16000)
    caller = np.concatenate([speech, np.zeros(8000, np.int16), keyed_tones(KEYED + "#", 16000), np.zeros(8000, np.int16)])
    assert digits_in(resample(caller, 16000, 8000)) == KEYED + "#"
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([caller, np.zeros_like(caller)], axis=1), 16000, format="FLAC", subtype="PCM_16")
    flac, spans = redact_recording(buffer.getvalue(), ["card"], [KEYED])
    audio, _rate = sf.read(io.BytesIO(flac), dtype="int16", always_2d=True)
    assert digits_in(resample(audio[:, 0], 16000, 8000)) == ""
    assert {s.reason for s in spans} == {"keypad"} and len(spans) == len(KEYED) + 1
    assert np.array_equal(audio[: len(speech), 0], speech)  # the question is untouched
