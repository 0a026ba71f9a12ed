"""Voice-to-voice latency read at a SIP phone, with the caller simulator's definitions.

**End of speech** is the clip's known end (``benchmarks/clips/known_end.tsv``), placed on the
phone's send clock: a 20 ms frame sent at ``t`` holds the audio of ``[t - 20 ms, t)``, as in
``switchboard.speech_end``'s packetization note (PJSIP encodes and sends the frame in the
media-clock tick that pulled it). **The reply starts** at the first sample of the first 10 ms
of heard audio louder than the caller simulator's audibility threshold, found the way the
simulator finds it (where a wave of that level first peaks, searched from the 10 ms before);
a heard frame handed over at ``t`` is placed at ``[t, t + 20 ms)``, played as it arrives.

What the phone adds itself (its jitter buffer and media clock) is measured against the fake
SIP agent of known delay (``fake_sip_agent``) and reported beside every figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from switchboard.audio import frame_dbfs
from switchboard.loadtest.caller import CallScript
from switchboard.loadtest.known_end import KnownEndClip
from switchboard.loadtest.rtp_tap import PCMU, RtpPacket, RtpTap
from switchboard.loadtest.sip_phone import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    PhoneCall,
    SipPhone,
    Utterance,
)

AUDIBLE_DBFS: float = CallScript.model_fields["speech_threshold_dbfs"].default
_AUDIBLE_RMS = 32768 * 10 ** (AUDIBLE_DBFS / 20)
_LEVEL_SAMPLES = SAMPLE_RATE // 100  # 10 ms


@dataclass
class SipTurn:
    clip: str
    speech_end_at: float | None = None  # time.monotonic()
    reply_at: float | None = None
    failure: str | None = None

    @property
    def voice_to_voice_ms(self) -> float | None:
        if self.speech_end_at is None or self.reply_at is None:
            return None
        return round(float(self.reply_at - self.speech_end_at) * 1000, 1)


def speech_end_at(utterance: Utterance, speech_end_s: float) -> float | None:
    """When the utterance's end of speech left the phone (None until that frame was sent)."""
    end_sample = round(speech_end_s * SAMPLE_RATE)
    frame = max(0, -(-end_sample // FRAME_SAMPLES) - 1)
    if frame >= len(utterance.sent_at):
        return None
    return utterance.sent_at[frame] - ((frame + 1) * FRAME_SAMPLES - end_sample) / SAMPLE_RATE


def reply_onset(call: PhoneCall, since: float, threshold_dbfs: float = AUDIBLE_DBFS) -> float | None:
    """When audio louder than ``threshold_dbfs`` first reached the phone after ``since``."""
    return audible_onset([(f.at, f.samples) for f in list(call._heard) if f.at >= since], threshold_dbfs)


def audible_onset(frames: list[tuple[float, np.ndarray]], threshold_dbfs: float = AUDIBLE_DBFS) -> float | None:
    """The first audible sample of consecutive frames ``(arrival, int16 samples)``, each played
    from its arrival on."""
    frames = [(at, samples) for at, samples in frames if len(samples)]
    if not frames:
        return None
    audio = np.concatenate([samples for _, samples in frames])
    loud = np.flatnonzero(frame_dbfs(audio, SAMPLE_RATE, 10) > threshold_dbfs)
    if not len(loud):
        return None
    peak = 32768 * 10 ** (threshold_dbfs / 20) * np.sqrt(2)
    first = max(0, int(loud[0]) - 1) * _LEVEL_SAMPLES
    above = np.flatnonzero(np.abs(audio[first : (int(loud[0]) + 1) * _LEVEL_SAMPLES]) >= peak)
    sample = first + (int(above[0]) if len(above) else _LEVEL_SAMPLES)
    starts = np.cumsum([0] + [len(samples) for _, samples in frames])
    index = int(np.searchsorted(starts, sample, side="right")) - 1
    return frames[index][0] + (sample - starts[index]) / SAMPLE_RATE


def wire_turn(packets: list[RtpPacket], turn: SipTurn, clip: KnownEndClip, clock_offset: float) -> SipTurn:
    """The same turn read on the wire at the phone's RTP port (``rtp_tap``): speech ends with
    the last packet the phone sent that carried the clip's speech, the reply starts at the first
    audible sample of the packets it got after that. ``clock_offset`` is realtime - monotonic."""
    wire = SipTurn(turn.clip, failure=turn.failure)
    if turn.speech_end_at is None:
        return wire
    end = turn.speech_end_at + clock_offset
    spoken = [p for p in packets if not p.inbound and p.payload_type == PCMU and not p.silent
              and end - clip.speech_end_s - 0.2 <= p.at <= end + 0.1]  # fmt: skip
    if not spoken:
        wire.failure = "speech_not_on_the_wire"
        return wire
    end_sample = round(clip.speech_end_s * SAMPLE_RATE)
    wire.speech_end_at = spoken[-1].at - (-end_sample % FRAME_SAMPLES) / SAMPLE_RATE
    heard = [(p.at, p.samples) for p in packets if p.inbound and p.payload_type == PCMU and p.at >= spoken[-1].at]
    wire.reply_at = audible_onset(heard)
    if wire.reply_at is None and wire.failure is None:
        wire.failure = "no_reply_on_the_wire"
    return wire


def say_and_time(call: PhoneCall, clip: KnownEndClip, reply_timeout_s: float = 10.0) -> SipTurn:
    """Say a known-end clip into the call and time the reply."""
    turn = SipTurn(clip.path.name)
    call.say(clip.path)
    utterance = call.said[-1]
    deadline = time.monotonic() + clip.speech_end_s + 5
    while (end := speech_end_at(utterance, clip.speech_end_s)) is None:
        if call.ended or time.monotonic() > deadline:
            turn.failure = "call_ended" if call.ended else "not_sent"
            return turn
        time.sleep(0.02)
    turn.speech_end_at = end
    deadline = end + reply_timeout_s
    while (onset := reply_onset(call, end)) is None:
        if call.ended or time.monotonic() > deadline:
            turn.failure = "call_ended" if call.ended else "no_reply"
            return turn
        time.sleep(0.02)
    turn.reply_at = onset
    return turn


def wait_quiet(call: PhoneCall, since: float, quiet_s: float = 0.8, timeout_s: float = 30.0) -> None:
    """Let the agent finish talking: ``quiet_s`` with nothing audible (by the same threshold)."""
    call.wait_for_silence(since, quiet_s, timeout_s, threshold=_AUDIBLE_RMS)


@dataclass
class SipCallResult:
    """One call as the phone heard it (``turns``) and as its RTP port carried it (``wire``)."""

    call: PhoneCall
    turns: list[SipTurn]
    wire: list[SipTurn]
    failure: str | None = None


def run_sip_call(phone: SipPhone, uri: str, clips: list[KnownEndClip], tap: RtpTap | None = None, *,
                 goodbye: KnownEndClip | None = None, answer_timeout_s: float = 60.0) -> SipCallResult:
    """Dial ``uri``, hear the greeting out, say each clip after the agent's previous reply has
    ended, then say ``goodbye`` and wait for the agent's BYE (or hang up); timed turn by turn."""
    clock_offset = time.time() - time.monotonic()
    call = phone.call(uri)
    result = SipCallResult(call, [], [])
    try:
        call.wait_confirmed(answer_timeout_s)
        call.wait(lambda c: c.rtp_port is not None or c.ended, 10, "media")
        if tap is not None and call.rtp_port is not None:
            tap.watch(call.rtp_port)
        greeting = call.wait_for_sound(call.confirmed_at or 0.0, 15, threshold=_AUDIBLE_RMS)
        wait_quiet(call, greeting)
        spoken = [*clips, goodbye] if goodbye else clips
        for clip in spoken:
            turn = say_and_time(call, clip)
            result.turns.append(turn)
            if turn.failure:
                result.failure = turn.failure
                break
            if clip is not goodbye:
                wait_quiet(call, turn.reply_at or time.monotonic())
        if goodbye and result.failure is None:
            call.wait_ended(20)
    except (AssertionError, TimeoutError) as e:
        result.failure = str(e)
    finally:
        if not call.ended:
            call.hang_up()
            call.wait_ended(10)
    if tap is not None and call.rtp_port is not None:
        packets = tap.packets(call.rtp_port)
        result.wire = [wire_turn(packets, turn, clip, clock_offset)
                       for turn, clip in zip(result.turns, spoken, strict=False)]  # fmt: skip
    return result
