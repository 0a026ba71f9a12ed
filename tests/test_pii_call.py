"""End to end over a Twilio media stream: a caller says a card number, keys a patient number
(in-band tones and Twilio's DTMF events, as a phone line carries them), and hangs up; the
stored record, the post-call webhook, the recording and the server's log hold none of it.

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
CARD = "It's an American Express, three seven eight two, eight two two four six, three one zero zero zero five."
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


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The caller's speech (Piper), then the patient number's tones (Pipecat's): an 8 kHz WAV."""
    import pipecat.audio.dtmf

    from switchboard.engines.piper_tts import shared_piper

    folder = tmp_path_factory.mktemp("pii-clips")
    piper = shared_piper()
    speech = resample(np.frombuffer(piper.synthesize(CARD), dtype=np.int16), piper.sample_rate, 8000)
    tones = Path(pipecat.audio.dtmf.__file__).parent
    names = {"#": "pound"}
    keyed = np.concatenate([read_wav(tones / f"dtmf-{names.get(d, d)}.wav", 8000) for d in KEYED + "#"])
    write_wav(folder / "card.wav", np.concatenate([speech, np.zeros(4000, np.int16), keyed]), 8000)
    return {"card": folder / "card.wav"}


async def test_a_call_with_a_spoken_card_and_keyed_digits_leaves_none_of_them_behind(
    signed_agent: SignedAgent, pii_line: str, clips: dict[str, Path]
) -> None:
    script = CallScript(
        to_number=pii_line,
        turns=[
            # The keys as a phone line carries them (in-band), after the card number...
            CallerTurn(audio=clips["card"]),
            CallerTurn(dtmf="4"),  # menu: patient number
            CallerTurn(dtmf=KEYED + "#"),  # ...and as Twilio reports them
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
    assert "Thank you. I have patient number [KEYPAD]." in [e.text for e in record.transcript]
    assert [e.digits for e in record.events if e.event == "digits"] == ["[KEYPAD]"]

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
