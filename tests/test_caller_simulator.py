"""The caller simulator against a small fake agent that speaks Twilio's Media Streams protocol."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from switchboard.audio import (
    TELEPHONY_FRAME_BYTES,
    TELEPHONY_RATE,
    dbfs,
    frame_dbfs,
    read_wav,
    ulaw_decode,
    ulaw_encode,
)
from switchboard.loadtest import (
    CallerTurn,
    CallOutcome,
    CallResult,
    CallScript,
    format_summary,
    run_call,
    write_json,
)
from switchboard.loadtest.validation import serve_app as serve
from switchboard.speech_end import speech_bounds

SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
THRESHOLD_DBFS = -45.0
HANGOVER_MS = 300  # the fake agent's end-of-utterance silence
REPLY_DELAY_MS = 300  # the fake agent's artificial "thinking" time
AUTH_TOKEN = "test-auth-token"


# --- speech clips ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A manifest clip with its measured speech span at 8 kHz."""

    path: Path
    transcript: str
    seconds: float
    speech_start_s: float
    speech_end_s: float
    audible_end_s: float  # where a -45 dBFS detector (this file's fake agent) hears it end


def _clean_clips() -> list[Clip]:
    """Manifest clips a -45 dBFS energy detector sees as one utterance: a noise floor well below
    the threshold and no internal pause as long as the fake agent's hangover; shortest first."""
    clips: dict[str, Clip] = {}
    with open(SPEECH_DIR / "manifest.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["transcript"] in clips:  # the same recording at another rate
                continue
            samples = ulaw_decode(ulaw_encode(read_wav(SPEECH_DIR / row["file"], TELEPHONY_RATE)))
            levels = frame_dbfs(samples, TELEPHONY_RATE, 10)
            loud = np.flatnonzero(levels > THRESHOLD_DBFS)
            longest_pause_ms = (np.diff(loud).max() - 1) * 10 if len(loud) > 1 else 0
            if np.percentile(levels, 10) > -54 or longest_pause_ms >= HANGOVER_MS - 50:
                continue
            bounds = speech_bounds(samples, TELEPHONY_RATE)
            audible = speech_bounds(samples, TELEPHONY_RATE, threshold=THRESHOLD_DBFS)
            assert bounds is not None and audible is not None
            clips[row["transcript"]] = Clip(
                SPEECH_DIR / row["file"],
                row["transcript"],
                len(samples) / TELEPHONY_RATE,
                bounds.start,
                bounds.end,
                audible.end,
            )
    return sorted(clips.values(), key=lambda c: c.seconds)


CLIPS = _clean_clips()
SHORT = CLIPS[0]  # greeting and reply in most calls
LONG = max(CLIPS, key=lambda c: c.speech_end_s - c.speech_start_s)  # long enough to interrupt


# --- the fake agent -------------------------------------------------------------------------


@dataclass
class AgentBehaviour:
    """How the fake agent behaves; one instance per test server."""

    greeting: Path | None = SHORT.path
    reply: Path = SHORT.path
    listens_while_speaking: bool = True  # False: a half-duplex agent that ignores barge-in
    hangup_after_replies: int | None = None
    busy: bool = False
    send_junk: bool = False
    burst_frames: int = (
        50  # one second of audio every 250 ms: four times real time, like a fast TTS
    )
    burst_interval_s: float = 0.25


@dataclass
class AgentLog:
    """What the fake agent saw, for assertions."""

    webhook_forms: list[dict[str, str]] = field(default_factory=list)
    webhook_signature_ok: list[bool] = field(default_factory=list)
    ws_signature_ok: list[bool] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    media_arrivals: list[tuple[float, dict]] = field(default_factory=list)
    marks_sent: dict[str, float] = field(default_factory=dict)
    first_frame_sent: dict[str, float] = field(default_factory=dict)
    marks_echoed: dict[str, float] = field(default_factory=dict)
    clears_sent: list[float] = field(default_factory=list)


def _ulaw_frames(path: Path) -> list[bytes]:
    data = ulaw_encode(read_wav(path, TELEPHONY_RATE))
    return [data[i : i + TELEPHONY_FRAME_BYTES] for i in range(0, len(data), TELEPHONY_FRAME_BYTES)]


class FakeCall:
    """One media stream on the fake agent: speaks, listens by energy, replies after a delay."""

    def __init__(self, ws: WebSocket, behaviour: AgentBehaviour, log: AgentLog):
        self.ws, self.behaviour, self.log = ws, behaviour, log
        self.stream_sid = ""
        self.speaking: str | None = None  # name of the utterance playing until its mark returns
        self.speech_task: asyncio.Task[None] | None = None
        self.in_speech = False
        self.silent_frames = 0
        self.replies = 0
        self.hangup = asyncio.Event()

    async def run(self) -> None:
        try:
            while not self.hangup.is_set():
                receive = asyncio.ensure_future(self.ws.receive_text())
                hangup = asyncio.ensure_future(self.hangup.wait())
                done, _ = await asyncio.wait({receive, hangup}, return_when=asyncio.FIRST_COMPLETED)
                for task in (receive, hangup):
                    if task not in done:
                        task.cancel()
                if receive in done and not await self.on_message(json.loads(receive.result())):
                    return
        except WebSocketDisconnect:
            return
        finally:
            if self.speech_task:
                self.speech_task.cancel()
        await self.ws.close()

    async def on_message(self, message: dict) -> bool:
        self.log.messages.append(message)
        event = message["event"]
        if event == "start":
            self.stream_sid = message["streamSid"]
            if self.behaviour.send_junk:
                await self.ws.send_text(
                    json.dumps({"event": "bogus", "streamSid": self.stream_sid})
                )
                await self.ws.send_text("not json at all")
            if self.behaviour.greeting:
                self.say(self.behaviour.greeting, "greeting")
        elif event == "media":
            self.log.media_arrivals.append(
                (time.monotonic(), {k: v for k, v in message["media"].items() if k != "payload"})
            )
            await self.on_audio(base64.b64decode(message["media"]["payload"]))
        elif event == "mark":
            name = message["mark"]["name"]
            self.log.marks_echoed[name] = time.monotonic()
            if name == self.speaking:
                self.speaking = None
                if self.behaviour.hangup_after_replies == self.replies:
                    self.hangup.set()
        elif event == "stop":
            return False
        return True

    async def on_audio(self, payload: bytes) -> None:
        if self.speaking and not self.behaviour.listens_while_speaking:
            return
        if dbfs(ulaw_decode(payload)) > THRESHOLD_DBFS:
            if not self.in_speech and self.speaking:
                await self.barge_in()
            self.in_speech, self.silent_frames = True, 0
        elif self.in_speech:
            self.silent_frames += 1
            if self.silent_frames * 20 >= HANGOVER_MS:
                self.in_speech = False
                self.replies += 1
                self.say(
                    self.behaviour.reply, f"reply_{self.replies}", delay_s=REPLY_DELAY_MS / 1000
                )

    async def barge_in(self) -> None:
        if self.speech_task:
            self.speech_task.cancel()
        self.speaking = None
        self.log.clears_sent.append(time.monotonic())
        await self.ws.send_text(json.dumps({"event": "clear", "streamSid": self.stream_sid}))

    def say(self, clip: Path, name: str, delay_s: float = 0.0) -> None:
        self.speaking = name
        self.speech_task = asyncio.create_task(self._send_clip(clip, name, delay_s))

    async def _send_clip(self, clip: Path, name: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        frames = _ulaw_frames(clip)
        self.log.first_frame_sent[name] = time.monotonic()
        step = self.behaviour.burst_frames
        for i in range(0, len(frames), step):
            for frame in frames[i : i + step]:
                media = {"payload": base64.b64encode(frame).decode()}
                await self.ws.send_text(
                    json.dumps({"event": "media", "streamSid": self.stream_sid, "media": media})
                )
            if i + step < len(frames):
                await asyncio.sleep(self.behaviour.burst_interval_s)
        self.log.marks_sent[name] = time.monotonic()
        await self.ws.send_text(
            json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
        )


def fake_agent(behaviour: AgentBehaviour, log: AgentLog) -> FastAPI:
    """A FastAPI app with Twilio's voice webhook and media stream, answering like a voice agent."""
    app = FastAPI()

    @app.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        log.webhook_forms.append(form)
        signature = request.headers.get("X-Twilio-Signature", "")
        ok = RequestValidator(AUTH_TOKEN).validate(str(request.url), form, signature)
        log.webhook_signature_ok.append(ok)
        if not ok:
            return Response(status_code=403)
        twiml = VoiceResponse()
        if behaviour.busy:
            twiml.say("All our agents are busy. Please call again later.")
            twiml.hangup()
        else:
            connect = Connect()
            stream = connect.stream(
                url=str(request.base_url).replace("http", "ws", 1) + "twilio/media"
            )
            stream.parameter(name="callSid", value=form["CallSid"])
            stream.parameter(name="agent", value="fake")
            twiml.append(connect)
        return Response(str(twiml), media_type="application/xml")

    @app.websocket("/twilio/media")
    async def media(ws: WebSocket) -> None:
        url = str(ws.url).replace("http", "ws", 1)
        signature = ws.headers.get("X-Twilio-Signature", "")
        log.ws_signature_ok.append(RequestValidator(AUTH_TOKEN).validate(url, {}, signature))
        await ws.accept()
        await FakeCall(ws, behaviour, log).run()

    return app


async def call_fake_agent(
    behaviour: AgentBehaviour, script: CallScript, **kwargs
) -> tuple[CallResult, AgentLog]:
    log = AgentLog()
    with serve(fake_agent(behaviour, log)) as base_url:
        result = await run_call(
            base_url,
            script,
            auth_token=AUTH_TOKEN,
            transcribe=kwargs.pop("transcribe", False),
            **kwargs,
        )
    return result, log


def _lead_ms(clip: Clip) -> float:
    return clip.speech_start_s * 1000


# --- a two-turn call that ends with the agent hanging up, shared by several tests -----------


@dataclass
class TwoTurnCall:
    result: CallResult
    log: AgentLog
    recording: Path


@pytest.fixture(scope="module")
async def two_turn_call(tmp_path_factory: pytest.TempPathFactory) -> TwoTurnCall:
    recording = tmp_path_factory.mktemp("calls") / "two_turns.wav"
    script = CallScript(
        turns=[
            CallerTurn(audio=CLIPS[1].path, expected_text=CLIPS[1].transcript),
            CallerTurn(audio=CLIPS[2].path, hangup_expected=True),
        ]
    )
    result, log = await call_fake_agent(
        AgentBehaviour(hangup_after_replies=2, send_junk=True), script, record_path=recording
    )
    return TwoTurnCall(result, log, recording)


def test_agent_hangup_after_last_reply_is_reported(two_turn_call: TwoTurnCall) -> None:
    result = two_turn_call.result
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, format_summary(result)
    assert [t.failure for t in result.turns] == [None, None]
    assert "stop" not in result.messages_sent


def test_caller_speech_is_placed_on_the_timeline_from_the_clip(two_turn_call: TwoTurnCall) -> None:
    turn = two_turn_call.result.turns[0]
    span = turn.caller_speech_end_s - turn.caller_speech_start_s
    assert span == pytest.approx(CLIPS[1].speech_end_s - CLIPS[1].speech_start_s, abs=0.011)
    assert turn.expected_text == CLIPS[1].transcript
    assert turn.reply_duration_s == pytest.approx(
        SHORT.audible_end_s - SHORT.speech_start_s, abs=0.05
    )


def test_greeting_latency_is_measured_from_start(two_turn_call: TwoTurnCall) -> None:
    greeting = two_turn_call.result.greeting
    assert greeting is not None
    assert _lead_ms(SHORT) <= greeting.latency_ms <= _lead_ms(SHORT) + 80
    assert greeting.duration_s == pytest.approx(SHORT.audible_end_s - SHORT.speech_start_s, abs=0.05)


def test_recording_has_caller_left_and_agent_right(two_turn_call: TwoTurnCall) -> None:
    result = two_turn_call.result
    audio, rate = sf.read(two_turn_call.recording, dtype="int16", always_2d=True)
    assert rate == TELEPHONY_RATE and audio.shape[1] == 2
    caller, agent = audio[:, 0], audio[:, 1]

    def level(channel: np.ndarray, start_s: float, end_s: float) -> float:
        return dbfs(channel[int(start_s * rate) : int(end_s * rate)])

    greeting = result.greeting
    assert greeting is not None and greeting.duration_s is not None
    greeting_span = (greeting.start_s, greeting.start_s + greeting.duration_s)
    assert level(agent, *greeting_span) > -35 and level(caller, *greeting_span) < -60
    turn = result.turns[0]
    caller_span = (turn.caller_speech_start_s, turn.caller_speech_end_s)
    assert level(caller, *caller_span) > -50 and level(agent, *caller_span) < -60
    # The caller channel holds exactly the µ-law samples sent, where the clip was sent.
    sent = ulaw_decode(ulaw_encode(read_wav(CLIPS[1].path, TELEPHONY_RATE)))
    offset = round((turn.caller_speech_start_s - CLIPS[1].speech_start_s) * rate)
    assert np.array_equal(caller[offset : offset + len(sent)], sent)


def test_marks_are_echoed_when_playback_reaches_them(two_turn_call: TwoTurnCall) -> None:
    log = two_turn_call.log
    assert set(log.marks_echoed) == {"greeting", "reply_1", "reply_2"}
    assert two_turn_call.result.marks_echoed == 3
    for name in log.marks_echoed:
        # Sent four times faster than real time, so the echo must wait for the audio to play.
        played_for = log.marks_echoed[name] - log.first_frame_sent[name]
        assert SHORT.seconds - 0.05 <= played_for <= SHORT.seconds + 0.25, (name, played_for)
        assert log.marks_sent[name] - log.first_frame_sent[name] < SHORT.seconds / 2


def test_stream_opens_like_twilio(two_turn_call: TwoTurnCall) -> None:
    log, result = two_turn_call.log, two_turn_call.result
    assert log.webhook_signature_ok == [True] and log.ws_signature_ok == [True]
    form = log.webhook_forms[0]
    assert re.fullmatch(r"CA[0-9a-f]{32}", form["CallSid"]) and re.fullmatch(
        r"AC[0-9a-f]{32}", form["AccountSid"]
    )
    assert form["Direction"] == "inbound" and form["CallStatus"] == "ringing"
    connected, start = log.messages[0], log.messages[1]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["sequenceNumber"] == "1" and re.fullmatch(r"MZ[0-9a-f]{32}", start["streamSid"])
    assert start["start"]["callSid"] == result.call_sid == form["CallSid"]
    assert start["start"]["customParameters"] == {"callSid": result.call_sid, "agent": "fake"}
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    sequence = [int(m["sequenceNumber"]) for m in log.messages[1:]]
    assert sequence == list(range(1, len(sequence) + 1))


def test_media_is_paced_by_the_clock_without_drift(two_turn_call: TwoTurnCall) -> None:
    arrivals = two_turn_call.log.media_arrivals
    assert [int(m["chunk"]) for _, m in arrivals] == list(range(1, len(arrivals) + 1))
    assert [int(m["timestamp"]) for _, m in arrivals] == [20 * i for i in range(len(arrivals))]
    elapsed = arrivals[-1][0] - arrivals[0][0]
    assert elapsed == pytest.approx(int(arrivals[-1][1]["timestamp"]) / 1000, abs=0.1)
    assert two_turn_call.result.max_clock_lag_ms < 100


def test_unknown_messages_are_recorded_not_fatal(two_turn_call: TwoTurnCall) -> None:
    unknown = two_turn_call.result.unknown_messages
    assert len(unknown) == 2 and "bogus" in unknown[0] and unknown[1] == "not json at all"


def test_report_is_json_and_a_readable_table(two_turn_call: TwoTurnCall, tmp_path: Path) -> None:
    path = write_json(two_turn_call.result, tmp_path / "report" / "call.json")
    assert CallResult.model_validate_json(path.read_text()) == two_turn_call.result
    assert json.loads(path.read_text())["version"] == 1
    summary = format_summary(two_turn_call.result)
    assert "agent_hung_up" in summary and "v2v ms" in summary
    assert len([line for line in summary.splitlines() if re.match(r"\s+\d\s+\d+", line)]) == 2


# --- barge-in --------------------------------------------------------------------------------


def _barge_in_script(reply_timeout_ms: int = 5000) -> CallScript:
    # Interrupt the long greeting one second in; the caller's clip is clean and short.
    return CallScript(
        turns=[CallerTurn(audio=SHORT.path, barge_in_after_ms=1000)],
        reply_timeout_ms=reply_timeout_ms,
    )


async def test_barge_in_is_ok_when_the_agent_clears() -> None:
    result, log = await call_fake_agent(AgentBehaviour(greeting=LONG.path), _barge_in_script())
    assert result.outcome == CallOutcome.COMPLETED, format_summary(result)
    turn = result.turns[0]
    assert turn.barge_in and turn.agent_talking_at_barge_in and turn.clear_received
    assert turn.barge_in_ok and turn.agent_stopped_ms is not None and turn.agent_stopped_ms < 150
    assert turn.barge_in_at_s is not None and result.greeting is not None
    assert turn.barge_in_at_s == pytest.approx(
        result.greeting.start_s + 1.0 + _lead_ms(SHORT) / 1000, abs=0.03
    )
    # The greeting mark was queued but not reached: a clear makes Twilio return it at once.
    assert log.marks_echoed["greeting"] - log.clears_sent[0] < 0.1
    # The caller counts from the end of its speech (a quiet last fricative included); the fake
    # agent's hangover starts where its -45 dBFS detector stops hearing it.
    quiet_tail_ms = (SHORT.speech_end_s - SHORT.audible_end_s) * 1000
    expected = HANGOVER_MS + REPLY_DELAY_MS + _lead_ms(SHORT) + 10 - quiet_tail_ms
    assert turn.voice_to_voice_ms is not None and abs(turn.voice_to_voice_ms - expected) <= 60


async def test_barge_in_fails_when_the_agent_talks_over_the_caller() -> None:
    behaviour = AgentBehaviour(greeting=LONG.path, listens_while_speaking=False)
    result, _ = await call_fake_agent(behaviour, _barge_in_script(reply_timeout_ms=1500))
    turn = result.turns[0]
    assert turn.barge_in_ok is False and not turn.clear_received
    assert turn.agent_stopped_ms is not None and turn.agent_stopped_ms > 1500
    assert result.clear_times_s == []


# --- failures --------------------------------------------------------------------------------


async def test_missing_greeting_is_a_failure() -> None:
    script = CallScript(turns=[CallerTurn(audio=SHORT.path)], greeting_timeout_ms=1000)
    result, _ = await call_fake_agent(AgentBehaviour(greeting=None), script)
    assert (result.outcome, result.reason) == (CallOutcome.FAILED, "no_greeting")
    assert result.messages_sent.get("stop") == 1


async def test_busy_twiml_is_a_rejection() -> None:
    result, log = await call_fake_agent(AgentBehaviour(busy=True), CallScript())
    assert result.outcome == CallOutcome.REJECTED and "busy" in (result.reason or "")
    assert log.messages == []


async def test_wrong_auth_token_fails_at_the_webhook() -> None:
    log = AgentLog()
    with serve(fake_agent(AgentBehaviour(), log)) as base_url:
        result = await run_call(base_url, CallScript(), auth_token="wrong", transcribe=False)
    assert (result.outcome, result.reason) == (CallOutcome.FAILED, "webhook_status_403")


# --- transcription ---------------------------------------------------------------------------


async def test_greeting_is_transcribed_with_whisper() -> None:
    # tiny.en hears this clean read sentence verbatim even through µ-law at 8 kHz.
    clip = next(c for c in CLIPS if c.path.name.startswith("fw_stereo_right"))
    result, _ = await call_fake_agent(
        AgentBehaviour(greeting=clip.path), CallScript(), transcribe=True
    )
    assert result.outcome == CallOutcome.COMPLETED and result.greeting is not None
    heard = set(re.findall(r"[a-z]+", (result.greeting.transcript or "").lower()))
    keywords = {w for w in re.findall(r"[a-z]+", clip.transcript.lower()) if len(w) >= 4}
    assert len(keywords & heard) >= 0.75 * len(keywords), (result.greeting.transcript, keywords)
