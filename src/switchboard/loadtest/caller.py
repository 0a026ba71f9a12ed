"""Caller simulator: plays Twilio's side of a phone call against an agent server and measures it.

The simulator does what Twilio does on a ``<Connect><Stream>`` call: it posts the voice webhook,
opens the Media Stream, sends 20 ms of caller audio every 20 ms (silence when the caller is quiet),
plays the agent's audio out of a buffer in real time, honours ``clear`` and echoes ``mark``; when
the agent's side closes the stream it follows the TwiML's ``<Redirect>`` to the next one. Both
directions are recorded on one 8 kHz timeline whose zero is the moment ``start`` was sent, so every
latency is what a caller would hear: caller speech end to the first audible *played* agent frame.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
import weakref
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, Field, model_validator
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidState, WebSocketException
from websockets.protocol import State

from switchboard.audio import (
    TELEPHONY_FRAME_BYTES,
    TELEPHONY_RATE,
    frame_dbfs,
    read_wav,
    resample,
    ulaw_decode,
    ulaw_encode,
    write_wav,
)
from switchboard.dtmf_tones import digits_in
from switchboard.loadtest.hold import HoldDocument, HoldFollower, hold_document
from switchboard.loadtest.known_end import speech_end_of
from switchboard.loadtest.report import (
    CallOutcome,
    CallResult,
    GreetingResult,
    HoldSeen,
    StreamResume,
    TransferSeen,
    TurnResult,
)
from switchboard.speech_end import speech_bounds

_TICK_MS = 20
_LEVEL_MS = 10  # speech detection granularity on the timeline
_LEVELS_PER_TICK = _TICK_MS // _LEVEL_MS
_BYTES_PER_LEVEL = TELEPHONY_FRAME_BYTES // _LEVELS_PER_TICK
_SILENCE = b"\xff" * TELEPHONY_FRAME_BYTES  # µ-law zero, what Twilio sends for a quiet caller
_SILENCE_B64 = base64.b64encode(_SILENCE).decode()
_UNKNOWN_KEPT = 20
_MAX_SEND_BACKLOG = 256 * 1024  # bytes queued on a socket the agent no longer reads
# Soft word onsets and endings sit below the energy threshold; Whisper needs them.
_TRANSCRIBE_PAD_FRAMES = 20

T = TypeVar("T")


class CallerTurn(BaseModel):
    """One thing the caller says (or keys they press, or a silence they keep), and when."""

    audio: Path | None = Field(
        default=None, description="What the caller says; with neither audio nor dtmf, they stay silent"
    )
    dtmf: str | None = Field(
        default=None, pattern=r"^[0-9*#]+$", description="Keys pressed instead of speaking"
    )
    dtmf_gap_ms: int = Field(default=250, ge=0, description="Between two key presses")
    reply_timeout_ms: int | None = Field(
        default=None, description="Overrides the script's (a silent caller waits for a re-prompt)"
    )
    expected_text: str | None = None
    pause_before_ms: int = Field(
        default=600,
        description="Silence between the end of the agent's reply and the caller speaking; the end "
        "is only known after agent_done_silence_ms, so the effective pause is at least that",
    )
    barge_in_after_ms: int | None = Field(
        default=None,
        description="Speak this long after the previous reply (or the greeting) became audible, "
        "without waiting for it to finish",
    )
    hangup_expected: bool = Field(
        default=False, description="The agent should hang up after replying"
    )
    speech_end_s: float | None = Field(
        default=None,
        description="Where the clip's speech ends, if known; else a known-end manifest beside "
        "the clip, else the energy definition in switchboard.speech_end",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> CallerTurn:
        if self.audio is not None and self.dtmf is not None:
            raise ValueError("a turn either speaks (audio) or presses keys (dtmf), not both")
        return self

    @property
    def label(self) -> str:
        return str(self.audio) if self.audio else f"dtmf:{self.dtmf}" if self.dtmf else "silence"


class CallScript(BaseModel):
    """What the simulated caller says, and how long it waits for the agent."""

    turns: list[CallerTurn] = Field(default_factory=list)
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    webhook_url: str | None = Field(
        default=None,
        description="Answer an outbound call: post this webhook (the Url the call was created "
        "with) instead of base_url's /twilio/voice",
    )
    answered_by: str | None = Field(
        default=None, description="Outbound: Twilio's AnsweredBy (human, machine_end_beep, ...)"
    )
    greeting_timeout_ms: int = 10_000
    reply_timeout_ms: int = Field(default=5_000, description="From caller speech end to the reply")
    agent_done_silence_ms: int = Field(default=800, description="Agent silence that ends a reply")
    max_reply_ms: int = 60_000
    hangup_timeout_ms: int = 10_000
    barge_in_stop_ms: int = Field(
        default=1_500, description="Agent must stop this soon after a barge-in"
    )
    speech_threshold_dbfs: float = Field(
        default=-45.0, description="Agent audio louder than this is audible to the caller"
    )
    raw_messages_after_start: list[str] = Field(
        default_factory=list,
        description="Sent verbatim right after `start` (malformed-input drills); not Twilio's behaviour",
    )


class TurnSource(Protocol):
    """Writes the caller's turns one at a time, each once the caller has heard the agent's last
    reply (a simulated caller that listens, instead of a script fixed in advance)."""

    @property
    def hangup_expected(self) -> bool:
        """Once done, the caller waits for the agent to hang up instead of hanging up itself."""
        ...

    async def next_turn(self, index: int, heard: str) -> CallerTurn | None:
        """Turn ``index``, given what the caller heard of the agent's last reply (Whisper's
        words; the greeting for turn 0); None: the caller is done."""
        ...


@dataclass(frozen=True)
class _Clip:
    """A caller utterance ready to send: µ-law bytes and where the speech is, in 10 ms frames."""

    ulaw: bytes
    speech_start: int
    speech_end: int  # exclusive
    speech_end_sample: int


@lru_cache(maxsize=128)
def _load_clip(path: Path, speech_end_s: float | None = None) -> _Clip:
    """Read, convert and measure a clip once per process; load tests reuse the same few clips."""
    samples = read_wav(path, TELEPHONY_RATE)
    bounds = speech_bounds(samples, TELEPHONY_RATE)
    if bounds is None:
        raise ValueError(f"caller clip {path} has no speech")
    end_s = speech_end_s if speech_end_s is not None else speech_end_of(path)
    end_s = bounds.end if end_s is None else end_s
    return _Clip(
        ulaw_encode(samples),
        round(bounds.start * 1000 / _LEVEL_MS),
        round(end_s * 1000 / _LEVEL_MS),
        round(end_s * TELEPHONY_RATE),
    )


def preload_clips(paths: list[Path], script: CallScript | None = None) -> None:
    """Read and measure clips now, so a load test's first calls do not pay for it on the clock."""
    known = {t.audio: t.speech_end_s for t in (script.turns if script else [])}
    for path in paths:
        _load_clip(path, known.get(path))


class _Timeline:
    """Both channels of the call on one 8 kHz timeline, in the caller's time.

    Time zero is the stream's first clock tick. The caller's frame sent at a tick covers the
    20 ms *before* it (Twilio sends a frame once it has been captured: see
    ``switchboard.speech_end``). Agent audio is placed where a caller would hear it: from the
    moment it arrives, or right after the audio queued before it, so no reply waits for the
    next 20 ms tick to be counted. Levels are kept per 10 ms frame, up to "now" (the last
    tick), so replies can be found online.
    """

    def __init__(self, threshold_dbfs: float, capacity_ticks: int = 3000):
        self.caller = bytearray()
        self.ticks = 0
        self.frames = 0  # 10 ms frames whose agent level is final
        self._threshold = threshold_dbfs
        self._agent = np.zeros(capacity_ticks * TELEPHONY_FRAME_BYTES, dtype=np.int16)
        self._agent_until = 0  # samples written so far (the end of the last placed chunk)
        self._levels = np.full(capacity_ticks * _LEVELS_PER_TICK, -120.0, dtype=np.float32)

    def append_caller(self, caller_frame: bytes) -> None:
        """Record one tick's caller frame; its audio lies in the 20 ms before the tick."""
        if self.ticks:
            self.caller += caller_frame
        self.ticks += 1
        self.advance(self.ticks - 1)

    def advance(self, tick: int) -> None:
        """Agent levels are final up to ``tick``: nothing placed later can start before it."""
        upto = tick * _LEVELS_PER_TICK
        if upto <= self.frames:
            return
        self._grow_levels(upto)
        a = self.frames * _BYTES_PER_LEVEL
        b = min(upto * _BYTES_PER_LEVEL, self._agent_until)
        if b > a:
            levels = frame_dbfs(self._agent[a:b], TELEPHONY_RATE, _LEVEL_MS)
            self._levels[self.frames : self.frames + len(levels)] = levels
        self.frames = upto

    def place_agent(self, pcm: np.ndarray, at_sample: int) -> None:
        """Write agent samples from ``at_sample`` on (the playback buffer decides where)."""
        end = at_sample + len(pcm)
        if end > len(self._agent):
            grown = np.zeros(max(2 * len(self._agent), end), dtype=np.int16)
            grown[: len(self._agent)] = self._agent
            self._agent = grown
        self._agent[at_sample:end] = pcm
        self._agent_until = max(self._agent_until, end)

    def truncate_agent(self, at_sample: int) -> None:
        """A ``clear``: queued agent audio from ``at_sample`` on is never played."""
        if at_sample < self._agent_until:
            self._agent[at_sample : self._agent_until] = 0
            self._agent_until = at_sample

    def _grow_levels(self, frames: int) -> None:
        if frames > len(self._levels):
            grown = np.full(max(2 * len(self._levels), frames), -120.0, dtype=np.float32)
            grown[: len(self._levels)] = self._levels
            self._levels = grown

    def _audible(self, start: int, stop: int | None = None) -> np.ndarray:
        stop = self.frames if stop is None else min(stop, self.frames)
        return start + np.flatnonzero(self._levels[start:stop] > self._threshold)

    def first_audible(self, start: int) -> int | None:
        """First audible agent frame at or after ``start``."""
        found = self._audible(start)
        return int(found[0]) if len(found) else None

    def onset_sample(self, frame: int) -> int:
        """The first sample of an audible frame's sound: where a wave of the audible level
        first peaks, searched from the frame before (10 ms levels alone would read up to 10 ms
        late)."""
        peak = 32768 * 10 ** (self._threshold / 20) * np.sqrt(2)
        a = max(0, frame - 1) * _BYTES_PER_LEVEL
        loud = np.flatnonzero(np.abs(self._agent[a : (frame + 1) * _BYTES_PER_LEVEL]) >= peak)
        return a + int(loud[0]) if len(loud) else frame * _BYTES_PER_LEVEL

    def last_audible(self, start: int, stop: int | None = None) -> int | None:
        """Last audible agent frame in ``[start, stop)``."""
        found = self._audible(start, stop)
        return int(found[-1]) if len(found) else None

    def reply_end(self, start: int, min_gap: int, final: bool) -> int | None:
        """Last audible frame of the reply starting at ``start``: the frame before the first silence
        of ``min_gap`` frames. None while undecided; ``final`` means no more audio will come."""
        found = self._audible(start)
        if not len(found):
            return None
        gaps = np.flatnonzero(np.diff(found) > min_gap)
        if len(gaps):
            return int(found[gaps[0]])
        if final or self.frames - int(found[-1]) - 1 >= min_gap:
            return int(found[-1])
        return None

    def agent_pcm(self, start: int, end: int) -> np.ndarray:
        """Agent samples of frames ``start..end`` inclusive."""
        return self._agent[start * _BYTES_PER_LEVEL : (end + 1) * _BYTES_PER_LEVEL].copy()

    def stereo(self) -> np.ndarray:
        """(n, 2) int16: caller left, agent right, on the caller's time."""
        caller = ulaw_decode(bytes(self.caller))
        n = max(len(caller), self._agent_until)
        out = np.zeros((n, 2), dtype=np.int16)
        out[: len(caller), 0] = caller
        out[: self._agent_until, 1] = self._agent[: self._agent_until]
        return out


class _Playback:
    """Twilio's outbound buffer in continuous time: audio plays from the moment it arrives, or
    right after what is already queued; a mark fires when playback reaches it."""

    def __init__(self) -> None:
        self.end = 0  # sample at which the queued audio finishes playing
        self._marks: deque[tuple[int, str]] = deque()

    def queue(self, samples: int, now: int) -> int:
        """Queue ``samples`` of audio arriving at sample ``now``; returns where they start."""
        start = max(now, self.end)
        self.end = start + samples
        return start

    def mark(self, name: str, now: int) -> None:
        self._marks.append((max(now, self.end), name))

    def clear(self, now: int) -> list[str]:
        """Drop queued audio; returns the pending marks, which Twilio echoes at once."""
        self.end = min(self.end, now)
        names = [name for _, name in self._marks]
        self._marks.clear()
        return names

    def forget_marks(self) -> None:
        self._marks.clear()

    def due(self, now: int) -> list[str]:
        """Marks whose audio has finished playing by sample ``now``."""
        out: list[str] = []
        while self._marks and self._marks[0][0] <= now:
            out.append(self._marks.popleft()[1])
        return out


@dataclass(frozen=True)
class _CallIds:
    call_sid: str
    account_sid: str
    stream_sid: str


class _SharedClock:
    """One 20 ms clock per event loop that ticks every live call in turn.

    A clock per call costs a timer, a task wake-up and a sleep per call every 20 ms; one clock
    for all of them is what lets one process drive a few hundred calls. Ticks are scheduled
    against the clock's start, so scheduling delays never accumulate.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedClock] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._legs: list[_MediaLeg] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _SharedClock:
        clock = cls._by_loop.get(loop)
        if clock is None:
            clock = cls._by_loop[loop] = cls(loop)
        return clock

    def add(self, leg: _MediaLeg) -> None:
        self._legs.append(leg)
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name="caller-clock")

    def remove(self, leg: _MediaLeg) -> None:
        if leg in self._legs:
            self._legs.remove(leg)

    async def _run(self) -> None:
        start, ticks = self._loop.time(), 0
        while self._legs:
            deadline = start + ticks * _TICK_MS / 1000
            if deadline > self._loop.time():
                await asyncio.sleep(deadline - self._loop.time())
            lag_ms = (self._loop.time() - deadline) * 1000
            ticks += 1
            for leg in list(self._legs):
                leg.tick_now(deadline, lag_ms)


# Twilio's next step after a stream closed under it: the new stream and its parameters, or None.
_Follow = Callable[[], Awaitable[tuple[ClientConnection, dict[str, str]] | None]]


class _MediaLeg:
    """The Twilio end of one Media Stream: a clock-paced sender, a receiver and a playback buffer."""

    def __init__(
        self,
        ws: ClientConnection,
        ids: _CallIds,
        timeline: _Timeline,
        send_timeout_s: float,
        follow: _Follow | None = None,
    ):
        """``follow``: what Twilio does when the agent's side closes the stream (the TwiML's
        ``<Redirect>``): the next stream and its parameters, or None (the call is over)."""
        self.ids = ids
        self.timeline = timeline
        self.playback = _Playback()
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.clear_frames: list[int] = []
        self.unknown: list[str] = []
        self.max_lag_ms = 0.0
        self.closed = False
        self.closed_by_agent = False
        self.error: str | None = None
        self._ws = ws
        self._send_timeout_s = send_timeout_s
        self._send_lock = asyncio.Lock()
        self._seq = 0
        self._caller_audio = b""
        self._caller_pos = 0
        self._stopping = False
        self._base: float | None = None  # loop time of the first tick: the timeline's zero
        self.tick = asyncio.Event()
        self._follow = follow
        self.switching = False  # between a lost stream and the next one: caller audio is dropped
        self.resumes: list[StreamResume] = []
        self.stream_starts: list[int] = []  # timeline frame at which each later stream began
        self._old_audio_ends: list[int] = []  # where the lost stream's queued audio finished

    async def begin(self, custom_parameters: dict[str, str]) -> None:
        """Send ``connected`` and ``start`` as Twilio does; the timeline starts now."""
        await self._send(
            {"event": "connected", "protocol": "Call", "version": "1.0.0"}, numbered=False
        )
        start = {
            "accountSid": self.ids.account_sid,
            "streamSid": self.ids.stream_sid,
            "callSid": self.ids.call_sid,
            "tracks": ["inbound"],
            "customParameters": custom_parameters,
            "mediaFormat": {
                "encoding": "audio/x-mulaw",
                "sampleRate": TELEPHONY_RATE,
                "channels": 1,
            },
        }
        await self._send({"event": "start", "streamSid": self.ids.stream_sid, "start": start})

    async def send_raw(self, messages: list[str]) -> None:
        """Send messages verbatim: for checking that an agent survives malformed input."""
        async with self._send_lock:
            for message in messages:
                await asyncio.wait_for(self._ws.send(message), self._send_timeout_s)

    def press(self, digit: str) -> None:
        """A key press, as Twilio reports it on a bidirectional stream."""
        self._seq += 1
        self._send_now(
            json.dumps({"event": "dtmf", "streamSid": self.ids.stream_sid, "sequenceNumber": str(self._seq),
                        "dtmf": {"track": "inbound_track", "digit": digit}}),
            "dtmf",
        )

    def say(self, ulaw: bytes) -> int:
        """Start sending caller audio at the next tick; returns that tick."""
        self._caller_audio, self._caller_pos = ulaw, 0
        return self.timeline.ticks

    async def run_clock(self) -> None:
        """Send and play 20 ms per tick of the process's shared clock until the stream closes."""
        clock = _SharedClock.of(asyncio.get_running_loop())
        clock.add(self)
        try:
            while not self.closed:
                await self.tick.wait()
        finally:
            clock.remove(self)
            self._wake()

    def now_sample(self) -> int:
        """Where on the timeline (8 kHz samples) this moment is."""
        if self._base is None:
            return 0
        return max(0, round((asyncio.get_running_loop().time() - self._base) * TELEPHONY_RATE))

    def tick_now(self, deadline: float, lag_ms: float) -> None:
        """One 20 ms tick, without awaiting: the shared clock runs every call's tick in a row."""
        if self.closed:
            return
        if self._base is None:
            self._base = deadline
        self.max_lag_ms = max(self.max_lag_ms, lag_ms)
        caller = self._next_caller_frame()
        k = self.timeline.ticks
        self.timeline.append_caller(caller)
        due = self.playback.due(k * TELEPHONY_FRAME_BYTES)
        payload = _SILENCE_B64 if caller is _SILENCE else base64.b64encode(caller).decode()
        self._seq += 1
        # Formatted by hand: json.dumps per frame per call is a measurable share of a load test.
        self._send_now(
            f'{{"event":"media","sequenceNumber":"{self._seq}","streamSid":"{self.ids.stream_sid}",'
            f'"media":{{"track":"inbound","chunk":"{k + 1}","timestamp":"{k * _TICK_MS}",'
            f'"payload":"{payload}"}}}}',
            "media",
        )
        for name in due:
            self._echo_mark(name)
        self._wake()

    def _next_caller_frame(self) -> bytes:
        if self._caller_pos >= len(self._caller_audio):
            return _SILENCE
        frame = self._caller_audio[self._caller_pos : self._caller_pos + TELEPHONY_FRAME_BYTES]
        self._caller_pos += TELEPHONY_FRAME_BYTES
        return frame + _SILENCE[len(frame) :]

    async def run_receiver(self) -> None:
        """Handle the agent's messages until the socket closes and no redirect leads on."""
        try:
            while True:
                try:
                    async for raw in self._ws:
                        await self._handle(raw)
                except ConnectionClosed:
                    pass
                if not await self._follow_redirect():
                    break
        finally:
            self._on_closed()

    async def _follow_redirect(self) -> bool:
        """The stream closed under us: do what Twilio does next. True if a new stream is on."""
        if self._follow is None or self._stopping or self.error is not None:
            return False
        self.switching = True
        now = self.now_sample()
        lost = StreamResume(lost_at_s=now / TELEPHONY_RATE)
        # Neither the agent's queued audio nor the caller's own words are silence to the caller.
        old_audio_end = max(self.playback.end, now + len(self._caller_audio) - self._caller_pos)
        following = await self._follow()
        if following is None:
            return False
        self.resumes.append(lost)
        self._old_audio_ends.append(old_audio_end)
        self.playback.forget_marks()  # the old stream's marks mean nothing to the new one
        self._ws, custom = following
        self.ids = replace(self.ids, stream_sid=_new_sid("MZ"))
        lost.resumed_at_s = self.now_sample() / TELEPHONY_RATE
        self.stream_starts.append(self.timeline.frames)
        await self.begin(custom)  # media waits until ``start`` is out, as Twilio's does
        self.switching = False
        return not self.closed

    def _lost(self) -> None:
        """A send found the socket closed: the receiver follows the redirect, if there is one."""
        if self._follow is None or self._stopping:
            self._on_closed()
        else:
            self.switching = True

    def settle_resumes(self) -> None:
        """When the caller first heard the agent after each lost stream, and the silence before."""
        for resume, begin, old_end in zip(self.resumes, self.stream_starts, self._old_audio_ends, strict=False):
            heard = self.timeline.first_audible(max(begin, old_end // _BYTES_PER_LEVEL))
            if heard is None:
                continue
            resume.heard_at_s = _seconds(heard)
            quiet_from = max(resume.lost_at_s, old_end / TELEPHONY_RATE)
            resume.silence_s = round(max(0.0, resume.heard_at_s - quiet_from), 3)

    async def _handle(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            event = message["event"]
            if event == "media":
                pcm = ulaw_decode(base64.b64decode(message["media"]["payload"], validate=True))
                at = self.playback.queue(len(pcm), self.now_sample())
                self.timeline.place_agent(pcm, at)
            elif event == "mark":
                self.playback.mark(str(message["mark"]["name"]), self.now_sample())
            elif event == "clear":
                now = self.now_sample()
                self.clear_frames.append(now // _BYTES_PER_LEVEL)
                self.timeline.truncate_agent(now)
                for name in self.playback.clear(now):
                    self._echo_mark(name)
            else:
                self._record_unknown(raw)
                return
        except (ValueError, KeyError, TypeError, binascii.Error):
            self._record_unknown(raw)
            return
        self.received[event] += 1

    def _record_unknown(self, raw: str | bytes) -> None:
        self.received["unknown"] += 1
        if len(self.unknown) < _UNKNOWN_KEPT:
            self.unknown.append(str(raw[:200]))

    def _on_closed(self) -> None:
        """Play out what the agent already sent (instantly; pacing no longer matters), then wake
        waiters: an agent that says goodbye and hangs up is heard to the end."""
        if self.closed:
            return
        self.timeline.advance(-(-self.playback.end // TELEPHONY_FRAME_BYTES))
        self.closed = True
        self.closed_by_agent = not self._stopping and self.error is None
        self._wake()

    def _echo_mark(self, name: str) -> None:
        self._seq += 1
        message = {"event": "mark", "sequenceNumber": str(self._seq), "streamSid": self.ids.stream_sid,
                   "mark": {"name": name}}
        self._send_now(json.dumps(message), "mark")

    def _send_now(self, text: str, event: str) -> None:
        """Queue a message on the socket without awaiting (one write, no task, no timer)."""
        if self.closed or self.switching:
            return
        try:
            if self._ws.protocol.state is not State.OPEN:
                self._lost()
                return
            self._ws.protocol.send_text(text.encode())
            self._ws.send_data()
        except (OSError, InvalidState):
            self._lost()
            return
        self.sent[event] += 1
        if self._ws.transport.get_write_buffer_size() > _MAX_SEND_BACKLOG:
            # The agent stopped reading: a real network would have dropped the call by now.
            self.error = "send_timeout"
            self._on_closed()

    async def close(self) -> None:
        await self._ws.close()

    async def stop(self) -> None:
        """Send ``stop`` (if the socket is still open) as Twilio does when the caller hangs up."""
        self._stopping = True
        if not self.closed:
            stop = {"accountSid": self.ids.account_sid, "callSid": self.ids.call_sid}
            await self._send({"event": "stop", "streamSid": self.ids.stream_sid, "stop": stop})

    async def _send(self, message: dict[str, Any], numbered: bool = True) -> None:
        if self.closed:
            return
        if numbered:
            self._seq += 1
            message = {"event": message["event"], "sequenceNumber": str(self._seq), **message}
        try:
            async with self._send_lock:
                await asyncio.wait_for(self._ws.send(json.dumps(message)), self._send_timeout_s)
            self.sent[message["event"]] += 1
        except TimeoutError:
            self.error = "send_timeout"
            self._on_closed()
        except ConnectionClosed:
            self._lost()

    def _wake(self) -> None:
        event, self.tick = self.tick, asyncio.Event()
        event.set()


@dataclass
class _Reply:
    """Agent audio on the timeline, in 10 ms frames; ``end`` is the last audible frame."""

    start: int
    end: int | None = None


class _Conversation:
    """Runs a CallScript over a media leg and measures each turn from the outside."""

    def __init__(
        self, leg: _MediaLeg, script: CallScript, clips: list[_Clip | None], source: TurnSource | None = None
    ):
        self._leg = leg
        self._tl = leg.timeline
        self._script = script
        self._clips = clips
        self._source = source
        self._greeting_heard: str | None = None
        self._gap = script.agent_done_silence_ms // _LEVEL_MS
        self.greeting: _Reply | None = None
        self.turns: list[TurnResult] = []
        self.replies: list[tuple[_Reply, TurnResult]] = []
        self._resumes_heard = 0

    async def run(self) -> tuple[CallOutcome, str | None]:
        """Greeting, then each turn; returns the outcome and a failure reason."""
        s = self._script
        start = await self._wait(lambda: self._tl.first_audible(0), _frames(s.greeting_timeout_ms))
        if start is None:
            return CallOutcome.FAILED, self._leg.error or "no_greeting"
        self.greeting = previous = _Reply(start)
        if self._source is not None:
            return await self._run_listening(previous, self._source)
        for index, turn in enumerate(s.turns):
            if turn.barge_in_after_ms is None:
                end = await self._finish(previous)
                if end is None:
                    return CallOutcome.FAILED, "reply_too_long"
                previous = await self._hear_out_resumes(previous)
                end = previous.end if previous.end is not None else end
                speak_at = (end + 1) * _LEVEL_MS + turn.pause_before_ms
            else:
                speak_at = previous.start * _LEVEL_MS + turn.barge_in_after_ms
            await self._wait(lambda: None, _frames(speak_at))
            if self._leg.closed:
                return self._closed_early()
            reply = await self._turn(index, turn, self._clips[index], previous)
            if turn.hangup_expected:
                return await self._await_hangup(reply)
            if reply is None:
                return (
                    self._closed_early() if self._leg.closed else (CallOutcome.FAILED, "no_reply")
                )
            previous = reply
        if await self._finish(previous) is None:
            return CallOutcome.FAILED, "reply_too_long"
        if self._leg.closed_by_agent:
            return CallOutcome.AGENT_HUNG_UP, None
        return CallOutcome.COMPLETED, None

    async def _run_listening(self, previous: _Reply, source: TurnSource) -> tuple[CallOutcome, str | None]:
        """Each turn written by ``source`` from what the caller heard of the reply before it;
        the agent hanging up ends the call as the caller would take it: over, not failed."""
        index = 0
        while True:
            end = await self._finish(previous)
            if end is None:
                return CallOutcome.FAILED, "reply_too_long"
            previous = await self._hear_out_resumes(previous)
            end = previous.end if previous.end is not None else end
            heard = await self._hear(previous)
            if self._leg.closed:
                return self._hung_up()
            turn = await source.next_turn(index, heard)
            if turn is None:
                if source.hangup_expected:
                    return await self._await_hangup(None)
                return CallOutcome.COMPLETED, None
            clip = await asyncio.to_thread(_load_clip, turn.audio, turn.speech_end_s) if turn.audio else None
            # Thinking and speaking the line took a while: the caller speaks when both are done.
            await self._wait(lambda: None, _frames((end + 1) * _LEVEL_MS + turn.pause_before_ms))
            if self._leg.closed:
                return self._hung_up()
            reply = await self._turn(index, turn, clip, previous)
            if reply is None:
                return self._hung_up() if self._leg.closed else (CallOutcome.FAILED, "no_reply")
            previous, index = reply, index + 1

    async def _hear(self, reply: _Reply) -> str:
        """What the caller made of a finished reply (kept as its transcript in the result)."""
        heard = await _transcribe(reply, self._tl) if reply.end is not None else ""
        if reply is self.greeting:
            self._greeting_heard = heard
        for said, turn in self.replies:
            if said is reply:
                turn.transcript = heard
        return heard

    def _hung_up(self) -> tuple[CallOutcome, str | None]:
        return (CallOutcome.AGENT_HUNG_UP, None) if self._leg.closed_by_agent else self._closed_early()

    async def _hear_out_resumes(self, previous: _Reply) -> _Reply:
        """After a lost stream the agent on the new one speaks first ("sorry, you were
        saying?"): the caller lets it finish before going on, as a person would."""
        leg = self._leg
        while True:
            if leg.switching:  # Twilio is following the redirect
                await self._wait(lambda: None if leg.switching else True, self._tl.frames + _frames(30_000))
            if self._resumes_heard >= len(leg.stream_starts) or leg.closed:
                return previous
            begin = leg.stream_starts[self._resumes_heard]
            self._resumes_heard += 1
            start = await self._wait(
                lambda b=begin: self._tl.first_audible(b), begin + _frames(self._script.greeting_timeout_ms)
            )
            if start is None:
                return previous
            previous = _Reply(start)
            await self._finish(previous)

    async def _turn(
        self, index: int, turn: CallerTurn, clip: _Clip | None, previous: _Reply
    ) -> _Reply | None:
        if clip is not None:
            # The clip's first frame goes out at the next tick and holds the 20 ms before it.
            base = (self._leg.say(clip.ulaw) - 1) * _LEVELS_PER_TICK
            speech_start, speech_end = base + clip.speech_start, base + clip.speech_end
            end_sample = base * _BYTES_PER_LEVEL + clip.speech_end_sample
        else:  # keys, or silence: "speech end" is the last key press, or the silence's start
            speech_start = self._tl.frames
            for i, digit in enumerate(turn.dtmf or ""):
                if i:
                    await self._wait(lambda: None, self._tl.frames + _frames(turn.dtmf_gap_ms))
                self._leg.press(digit)
            speech_end = self._tl.frames
            end_sample = speech_end * _BYTES_PER_LEVEL
        result = TurnResult(
            index=index,
            clip=turn.label,
            expected_text=turn.expected_text,
            caller_speech_start_s=_seconds(speech_start),
            caller_speech_end_s=end_sample / TELEPHONY_RATE,
            barge_in=turn.barge_in_after_ms is not None,
        )
        self.turns.append(result)
        deadline = speech_end + _frames(turn.reply_timeout_ms or self._script.reply_timeout_ms)
        if result.barge_in:
            start = await self._wait(
                lambda: self._reply_after_barge_in(previous, speech_start, speech_end), deadline
            )
            self._measure_barge_in(result, previous, speech_start, start)
        else:
            start = await self._wait(lambda: self._tl.first_audible(speech_end), deadline)
        if start is None:
            result.failure = "no_reply"
            return None
        result.across_resume = any(speech_end <= f <= start for f in self._leg.stream_starts)
        reply = _Reply(start)
        self.replies.append((reply, result))
        onset = self._tl.onset_sample(start)
        result.agent_audio_start_s = onset / TELEPHONY_RATE
        result.voice_to_voice_ms = round((onset - end_sample) * 1000 / TELEPHONY_RATE, 1)
        return reply

    def _interrupted_end(self, previous: _Reply, barge_in: int) -> int | None:
        """Where the interrupted reply stopped: at a ``clear`` if one came, else at a silence gap."""
        clear = next((f for f in self._leg.clear_frames if f >= barge_in), None)
        if clear is not None:
            return self._tl.last_audible(previous.start, clear)
        return self._tl.reply_end(previous.start, self._gap, final=self._leg.closed)

    def _reply_after_barge_in(self, previous: _Reply, barge_in: int, speech_end: int) -> int | None:
        end = self._interrupted_end(previous, barge_in)
        return None if end is None else self._tl.first_audible(max(speech_end, end + 1))

    def _measure_barge_in(
        self, result: TurnResult, previous: _Reply, barge_in: int, reply_start: int | None
    ) -> None:
        end = self._interrupted_end(previous, barge_in)
        if end is None:  # still talking when the deadline passed
            end = self._tl.last_audible(previous.start) or previous.start
        previous.end = end
        talking = end >= barge_in
        stopped_ms = max(0, (end + 1 - barge_in) * _LEVEL_MS)
        last = self._tl.frames if reply_start is None else reply_start
        result.barge_in_at_s = _seconds(barge_in)
        result.agent_talking_at_barge_in = talking
        result.clear_received = any(barge_in <= f <= last for f in self._leg.clear_frames)
        result.agent_stopped_ms = float(stopped_ms)
        result.barge_in_ok = (stopped_ms <= self._script.barge_in_stop_ms) if talking else None

    async def _await_hangup(self, reply: _Reply | None) -> tuple[CallOutcome, str | None]:
        await self._wait(lambda: None, self._tl.frames + _frames(self._script.hangup_timeout_ms))
        if not self._leg.closed_by_agent:
            return CallOutcome.FAILED, self._leg.error or "no_hangup"
        if reply is not None:
            await self._finish(reply)
        return CallOutcome.AGENT_HUNG_UP, None

    def _closed_early(self) -> tuple[CallOutcome, str | None]:
        return CallOutcome.FAILED, self._leg.error or "agent_closed_early"

    async def _finish(self, reply: _Reply) -> int | None:
        """Wait until the reply is followed by agent_done_silence_ms of silence; sets its end."""
        if reply.end is None:
            reply.end = await self._wait(
                lambda: self._tl.reply_end(reply.start, self._gap, final=self._leg.closed),
                reply.start + _frames(self._script.max_reply_ms),
            )
        return reply.end

    def settle(self, result: CallResult) -> list[tuple[_Reply, GreetingResult | TurnResult]]:
        """After the call: fill in the greeting and every reply's duration; returns what to
        transcribe."""
        result.turns = self.turns
        spans: list[tuple[_Reply, GreetingResult | TurnResult]] = []
        if self.greeting is not None:
            result.greeting = GreetingResult(
                latency_ms=float(self.greeting.start * _LEVEL_MS),
                start_s=_seconds(self.greeting.start),
                transcript=self._greeting_heard,
            )
            spans.append((self.greeting, result.greeting))
        spans += self.replies
        for reply, target in spans:
            if reply.end is None:
                reply.end = self._tl.reply_end(reply.start, self._gap, final=True)
            if reply.end is not None:
                duration = _seconds(reply.end + 1 - reply.start)
                if isinstance(target, GreetingResult):
                    target.duration_s = duration
                else:
                    target.reply_duration_s = duration
        return [(r, t) for r, t in spans if r.end is not None]

    async def _wait(self, probe: Callable[[], T | None], deadline_frame: int) -> T | None:
        """Re-evaluate ``probe`` every tick until it gives a value, the deadline passes or the
        stream closes."""
        while True:
            tick = self._leg.tick
            value = probe()
            if value is not None or self._leg.closed or self._tl.frames >= deadline_frame:
                return value
            await tick.wait()


def _frames(ms: float) -> int:
    return int(-(-ms // _LEVEL_MS))


def _seconds(frame: int) -> float:
    return frame * _LEVEL_MS / 1000


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class _Rejected(Exception):
    """The webhook answered without a media stream."""


class _Failed(Exception):
    """The call could not be set up; the message is the reason."""


class _Held(Exception):
    """The webhook answered with a hold loop (``<Play>`` and ``<Redirect>``)."""

    def __init__(self, document: HoldDocument):
        super().__init__("on hold")
        self.document = document


class _Dialed(Exception):
    """The webhook answered by putting the call through to a person (``<Dial>``)."""

    def __init__(self, target: str):
        super().__init__(target)
        self.target = target


@dataclass(frozen=True)
class _StreamTwiml:
    url: str
    parameters: dict[str, str]
    redirect: str | None  # where Twilio goes when the stream closes (None: it hangs up)


def _parse_twiml(twiml: str) -> _StreamTwiml:
    """The ``<Connect><Stream>`` url, its ``<Parameter>``s and the ``<Redirect>`` after it;
    raises _Rejected for a busy answer."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise _Failed("twiml_invalid") from exc
    stream = root.find("./Connect/Stream")
    if stream is not None and stream.get("url"):
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return _StreamTwiml(stream.get("url", ""), params, _redirect_in(root))
    if root.find("Hangup") is not None or root.find("Reject") is not None:
        said = " ".join((say.text or "").strip() for say in root.findall("Say"))
        raise _Rejected(f"twiml: {said}" if said else "twiml: hangup")
    if (held := hold_document(root)) is not None:
        raise _Held(held)
    if (dial := root.find("Dial")) is not None:
        targets = [(n.text or "").strip() for n in dial if n.tag in ("Number", "Sip")]
        raise _Dialed(targets[0] if targets else (dial.text or "").strip())
    raise _Failed("twiml_without_stream")


def _redirect_in(root: ET.Element) -> str | None:
    """Where a TwiML document's ``<Redirect>`` sends Twilio next (None: it has none)."""
    redirect = root.find("Redirect")
    return ((redirect.text or "").strip() or None) if redirect is not None else None


def _redirect_of(twiml: str) -> str | None:
    try:
        return _redirect_in(ET.fromstring(twiml))
    except ET.ParseError:
        return None


async def run_call(
    base_url: str,
    script: CallScript,
    *,
    auth_token: str | None = None,
    record_path: Path | None = None,
    transcribe: bool = True,
    account_sid: str | None = None,
    http_client: httpx.AsyncClient | None = None,
    network_timeout_s: float = 10.0,
    max_call_s: float = 600.0,
    twilio_api: str | None = None,
    turn_source: TurnSource | None = None,
) -> CallResult:
    """Place one simulated Twilio call against ``base_url`` and measure it from the caller's side.

    ``http_client`` lets a load generator share one connection pool across calls. Transcription
    runs after the call has ended, so Whisper never competes with the real-time loop.
    ``twilio_api``: the Twilio REST emulator the agent's transfers go to; when the stream closes
    the simulator reads there where the call was sent and follows it as Twilio would.
    ``turn_source``: the caller's turns are written during the call, each after hearing the
    agent's reply (transcribed with Whisper as it ends), instead of ``script.turns``.
    """
    wall0 = time.monotonic()
    call = _Call(base_url, script, account_sid, auth_token, network_timeout_s, twilio_api, turn_source)
    try:
        async with AsyncExitStack() as stack:
            client = http_client or await stack.enter_async_context(
                httpx.AsyncClient(timeout=network_timeout_s)
            )
            await call.stream(await call.answer(client), client, max_call_s)
    except _Rejected as exc:
        call.result.outcome, call.result.reason = CallOutcome.REJECTED, str(exc)
    except _Dialed as exc:
        # Put through to people by the webhook's own answer: who answers is the carrier's business.
        call.result.transfers.append(TransferSeen(target=exc.target, dial_status="dialed", back_to_agent=False))
        call.result.outcome, call.result.reason = CallOutcome.TRANSFERRED, f"dialed {exc.target}"
    except _Failed as exc:
        call.result.outcome, call.result.reason = CallOutcome.FAILED, str(exc)
    await call.finish(transcribe, record_path)
    call.result.duration_s = time.monotonic() - wall0
    return call.result


class _Call:
    """One simulated call from webhook to report: the phases run_call strings together."""

    def __init__(
        self,
        base_url: str,
        script: CallScript,
        account_sid: str | None,
        auth_token: str | None,
        timeout_s: float,
        twilio_api: str | None = None,
        turn_source: TurnSource | None = None,
    ):
        self._turn_source = turn_source
        self._twilio_api = twilio_api.rstrip("/") if twilio_api else None
        self._started = time.monotonic()
        self._documents_seen = 0  # TwiML documents the agent gave the call through the REST API
        self.ids = _CallIds(_new_sid("CA"), account_sid or _new_sid("AC"), _new_sid("MZ"))
        self.result = CallResult(
            call_sid=self.ids.call_sid,
            base_url=base_url,
            outcome=CallOutcome.FAILED,
            started_at=datetime.now(UTC),
            duration_s=0.0,
        )
        self.script = script
        self.clips = [
            _load_clip(t.audio, t.speech_end_s) if t.audio is not None else None
            for t in script.turns
        ]
        self.timeline = _Timeline(script.speech_threshold_dbfs)
        self.conversation: _Conversation | None = None
        self._base_url = base_url
        self._auth_token = auth_token
        self._timeout_s = timeout_s

    def _signature(self, url: str, params: dict[str, str]) -> dict[str, str]:
        if not self._auth_token:
            return {}
        return {
            "X-Twilio-Signature": RequestValidator(self._auth_token).compute_signature(url, params)
        }

    def _webhook_params(self, status: str) -> dict[str, str]:
        params = {
            "CallSid": self.ids.call_sid,
            "AccountSid": self.ids.account_sid,
            "From": self.script.from_number,
            "To": self.script.to_number,
            "Direction": "inbound",
            "CallStatus": status,
            "ApiVersion": "2010-04-01",
        }
        if self.script.answered_by is not None:
            params.update(Direction="outbound-api", AnsweredBy=self.script.answered_by)
        return params

    async def _post(self, client: httpx.AsyncClient, url: str, status: str) -> _StreamTwiml:
        params = self._webhook_params(status)
        try:
            response = await client.post(url, data=params, headers=self._signature(url, params))
        except httpx.HTTPError as exc:
            raise _Failed(f"webhook_error: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise _Failed(f"webhook_status_{response.status_code}")
        return _parse_twiml(response.text)

    async def answer(self, client: httpx.AsyncClient) -> _StreamTwiml:
        """Post the voice webhook as Twilio does for a ringing inbound call; returns the stream."""
        url = self.script.webhook_url or self._base_url.rstrip("/") + "/twilio/voice"
        try:
            return await self._post(client, url, "ringing")
        except _Held as held:
            return await self._hold(client, held.document)

    async def _hold(self, client: httpx.AsyncClient, document: HoldDocument) -> _StreamTwiml:
        """Wait on hold as Twilio would until the call is streamed (or answered otherwise)."""
        self.result.hold = HoldSeen(queued_at_s=round(time.monotonic() - self._started, 3))

        async def post(url: str) -> str:
            params = self._webhook_params("in-progress")
            try:
                response = await client.post(url, data=params, headers=self._signature(url, params))
            except httpx.HTTPError as exc:
                raise _Failed(f"hold_webhook_error: {type(exc).__name__}") from exc
            if response.status_code != 200:
                raise _Failed(f"hold_webhook_status_{response.status_code}")
            return response.text

        follower = HoldFollower(client, self.result.hold, post, lambda: self._rest_update(client), self._started)
        return _parse_twiml(await follower.follow(document))

    async def _rest_update(self, client: httpx.AsyncClient) -> str | None:
        """TwiML the call was given through the REST API (the emulator's) since last asked."""
        if self._twilio_api is None:
            return None
        try:
            response = await client.get(f"{self._twilio_api}/emulator/calls/{self.ids.call_sid}")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        documents = response.json()["twiml"]
        if len(documents) <= self._documents_seen:
            return None
        self._documents_seen = len(documents)
        return documents[-1]

    async def _open(self, url: str) -> ClientConnection:
        try:
            return await connect(
                url,
                # Twilio does not compress media frames; deflating them only costs both ends CPU.
                compression=None,
                additional_headers=self._signature(url, {}),
                open_timeout=self._timeout_s,
                close_timeout=self._timeout_s,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise _Failed(f"stream_connect_error: {type(exc).__name__}") from exc

    def _follower(self, client: httpx.AsyncClient, twiml: _StreamTwiml) -> _Follow:
        """Twilio's part after a stream closes: post the ``<Redirect>``, open what it answers."""
        redirect = twiml.redirect

        async def follow() -> tuple[ClientConnection, dict[str, str]] | None:
            nonlocal redirect
            after = redirect
            transfer = await self._transfer(client)
            if transfer is not None:
                seen, after = transfer
                self.result.transfers.append(seen)
            if after is None:
                return None
            try:
                nxt = await self._post(client, after, "in-progress")
                ws = await self._open(nxt.url)
            except (_Rejected, _Failed):
                return None  # hung up (or nowhere to go): the call is over
            redirect = nxt.redirect
            return ws, nxt.parameters

        return follow

    async def _transfer(self, client: httpx.AsyncClient) -> tuple[TransferSeen, str | None] | None:
        """If the agent moved the call with a ``<Dial>`` through the REST API (the emulator's), wait
        for the dial's report and return it with the ``<Redirect>`` Twilio was answered (None: the
        call stays with the person); None if there was no transfer."""
        if self._twilio_api is None:
            return None
        url = f"{self._twilio_api}/emulator/calls/{self.ids.call_sid}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                response = await client.get(url)
            except httpx.HTTPError:
                return None
            if response.status_code != 200:
                return None
            state = response.json()
            if not any("<Dial" in d for d in state["twiml"][self._documents_seen :]):
                return None
            # A <Dial> without an action has nothing to report back: the person has the call.
            done = [d for d in state["dialed"] if "callback_status" in d or not d.get("action")]
            reported = done[len(self.result.transfers) :]
            if reported:
                self._documents_seen = len(state["twiml"])
                dial = reported[0]
                redirect = _redirect_of(dial.get("answer") or "")
                seen = TransferSeen(
                    target=dial["target"], dial_status=dial["outcome"], back_to_agent=redirect is not None
                )
                return seen, redirect
            await asyncio.sleep(0.1)
        return None

    async def stream(self, twiml: _StreamTwiml, client: httpx.AsyncClient, max_call_s: float) -> None:
        """Open the Media Stream, run the conversation, and always stop, close and reap the tasks."""
        ws = await self._open(twiml.url)
        custom = twiml.parameters
        self.result.stream_sid = self.ids.stream_sid
        leg = _MediaLeg(ws, self.ids, self.timeline, self._timeout_s, self._follower(client, twiml))
        self.conversation = _Conversation(leg, self.script, self.clips, self._turn_source)
        tasks: list[asyncio.Task[None]] = []
        try:
            await leg.begin(custom)
            if self.script.raw_messages_after_start:
                await leg.send_raw(self.script.raw_messages_after_start)
            tasks = [asyncio.create_task(leg.run_clock()), asyncio.create_task(leg.run_receiver())]
            try:
                async with asyncio.timeout(max_call_s):
                    self.result.outcome, self.result.reason = await self.conversation.run()
            except TimeoutError:
                self.result.outcome, self.result.reason = CallOutcome.FAILED, "call_timeout"
            await leg.stop()
            if self.result.transfers and not self.result.transfers[-1].back_to_agent:
                self.result.outcome = CallOutcome.TRANSFERRED  # the person took the call from here
        finally:
            await leg.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._count(leg)

    def _count(self, leg: _MediaLeg) -> None:
        self.result.messages_sent = dict(leg.sent)
        self.result.messages_received = dict(leg.received)
        self.result.clear_times_s = [_seconds(f) for f in leg.clear_frames]
        self.result.marks_received = leg.received["mark"]
        self.result.marks_echoed = leg.sent["mark"]
        self.result.unknown_messages = list(leg.unknown)
        self.result.max_clock_lag_ms = leg.max_lag_ms
        leg.settle_resumes()
        self.result.resumes = leg.resumes

    async def finish(self, transcribe: bool, record_path: Path | None) -> None:
        """Reply durations, transcripts and the stereo recording, once the call is over."""
        if self.conversation is not None:
            spans = self.conversation.settle(self.result)
            agent_track = self.timeline.agent_pcm(0, self.timeline.frames)
            self.result.digits_heard = await asyncio.to_thread(digits_in, agent_track)  # ~20 ms/min
            if transcribe:
                await _transcribe_replies(spans, self.timeline)
        if record_path is not None and self.timeline.ticks:
            await asyncio.to_thread(write_wav, record_path, self.timeline.stereo(), TELEPHONY_RATE)
            self.result.recording = str(record_path)


async def _transcribe_replies(
    spans: list[tuple[_Reply, GreetingResult | TurnResult]], timeline: _Timeline
) -> None:
    """Whisper each reply, one after another on the shared inference thread."""
    for reply, target in spans:
        target.transcript = await _transcribe(reply, timeline)


async def _transcribe(reply: _Reply, timeline: _Timeline) -> str:
    """Whisper's words for one finished reply, on the shared inference thread."""
    from switchboard.engines.whisper import SAMPLE_RATE, shared_whisper  # heavy; only when asked

    # The first load takes a second or more; off the loop so concurrent calls keep their clocks.
    whisper = await asyncio.to_thread(shared_whisper)
    assert reply.end is not None
    start = max(0, reply.start - _TRANSCRIBE_PAD_FRAMES)
    pcm = timeline.agent_pcm(start, reply.end + _TRANSCRIBE_PAD_FRAMES)
    pcm = resample(pcm, TELEPHONY_RATE, SAMPLE_RATE)
    return (await whisper.transcribe_async(pcm.astype(np.float32) / 32768.0)).text
