"""Caller-simulator results: versioned pydantic models, JSON output and a human-readable summary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

REPORT_VERSION = 1


class CallOutcome(StrEnum):
    """How a simulated call ended, as the caller saw it."""

    COMPLETED = "completed"
    AGENT_HUNG_UP = "agent_hung_up"
    TRANSFERRED = "transferred"  # the agent handed the caller to a person, who took the call
    REJECTED = "rejected"
    FAILED = "failed"


class GreetingResult(BaseModel):
    """The agent's first words, timed from the moment the stream started."""

    latency_ms: float = Field(
        description="From the `start` message to the first audible greeting frame"
    )
    start_s: float
    duration_s: float | None = None
    transcript: str | None = None


class TurnResult(BaseModel):
    """One caller utterance and the agent's reply to it, measured from the outside.

    All ``*_s`` times are seconds on the call's timeline, whose zero is the moment `start` was sent.
    """

    index: int
    clip: str
    expected_text: str | None = None
    caller_speech_start_s: float
    caller_speech_end_s: float
    agent_audio_start_s: float | None = None
    voice_to_voice_ms: float | None = Field(
        default=None, description="caller_speech_end_s to agent_audio_start_s"
    )
    reply_duration_s: float | None = None
    transcript: str | None = None
    failure: str | None = None
    barge_in: bool = False
    barge_in_at_s: float | None = Field(
        default=None, description="Caller speech start of a barge-in"
    )
    agent_talking_at_barge_in: bool | None = None
    clear_received: bool | None = None
    agent_stopped_ms: float | None = Field(
        default=None,
        description="From barge_in_at_s to the last audible frame of the interrupted reply",
    )
    barge_in_ok: bool | None = None
    across_resume: bool = Field(
        default=False,
        description="The stream was lost and the call carried on by another worker while this turn "
        "waited for its reply: its latency measures the recovery, not a turn",
    )


class TransferSeen(BaseModel):
    """Where the agent sent the call (read from the Twilio emulator) and how the dial went."""

    target: str
    dial_status: str = Field(description="DialCallStatus: completed (answered), busy, no-answer, failed")
    back_to_agent: bool = Field(description="Twilio was sent back to an agent after the dial")


class StreamResume(BaseModel):
    """The agent's stream closed without hanging up and Twilio's ``<Redirect>`` led to a new one."""

    lost_at_s: float = Field(description="When the old stream closed")
    resumed_at_s: float | None = Field(default=None, description="When the new stream started")
    heard_at_s: float | None = Field(default=None, description="First agent audio on the new stream")
    silence_s: float | None = Field(
        default=None,
        description="How long the caller waited in silence: from lost_at_s (or the end of what the "
        "agent had already sent, or of the caller's own utterance, if later) to heard_at_s",
    )


class HoldSeen(BaseModel):
    """The call waited in a hold queue: what Twilio was told to say and play, and how it ended.

    ``<Say>`` is recorded, not timed (Twilio's speech is not simulated); ``<Play>`` takes the
    audio's own length, fetched and checked to be audible, or until a REST update moves the call.
    """

    lines: list[str] = Field(default_factory=list, description="Every <Say> while holding, in order")
    positions: list[int] = Field(default_factory=list, description="Places in line announced, in order")
    hold_audio_url: str | None = None
    hold_audio_s: float = Field(default=0.0, description="Audible hold audio played (seconds)")
    rounds: int = Field(default=0, description="Hold documents followed (the first answer, then each <Redirect>)")
    queued_at_s: float = Field(description="Since the voice webhook was posted")
    left_at_s: float | None = Field(default=None, description="When the hold ended (connected or not)")
    connected: bool = Field(default=False, description="The hold ended on a media stream to an agent")
    moved_by_rest: bool = Field(default=False, description="A REST update ended the hold, not a <Redirect>")


class CallResult(BaseModel):
    """Everything one simulated call measured; the unit the load generator aggregates."""

    version: int = REPORT_VERSION
    call_sid: str
    stream_sid: str | None = None
    base_url: str
    outcome: CallOutcome
    reason: str | None = None
    started_at: datetime
    duration_s: float = Field(description="Wall time from the webhook POST to the end of the call")
    greeting: GreetingResult | None = None
    turns: list[TurnResult] = Field(default_factory=list)
    recording: str | None = None
    messages_sent: dict[str, int] = Field(default_factory=dict)
    messages_received: dict[str, int] = Field(default_factory=dict)
    clear_times_s: list[float] = Field(default_factory=list)
    marks_received: int = 0
    marks_echoed: int = 0
    unknown_messages: list[str] = Field(
        default_factory=list, description="Messages the simulator did not understand (truncated)"
    )
    max_clock_lag_ms: float = Field(
        default=0.0,
        description="Worst lateness of the 20 ms send clock; large values void the timings",
    )
    resumes: list[StreamResume] = Field(
        default_factory=list, description="Streams lost and replaced during the call, in order"
    )
    transfers: list[TransferSeen] = Field(
        default_factory=list, description="Transfers the agent made, when the Twilio emulator was given"
    )
    digits_heard: str = Field(
        default="", description="Keypad tones the agent played to the caller (an IVR's view)"
    )
    hold: HoldSeen | None = Field(default=None, description="The call waited in a hold queue first")


def write_json(result: CallResult, path: str | Path) -> Path:
    """Write ``result`` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json(indent=2) + "\n")
    return path


def format_summary(result: CallResult) -> str:
    """A short text report: outcome, greeting, and one table row per turn."""
    lines = [
        f"call {result.call_sid}: {result.outcome.value}"
        + (f" ({result.reason})" if result.reason else "")
    ]
    if result.greeting is not None:
        g = result.greeting
        lines.append(f"greeting after {g.latency_ms:.0f} ms: {_clip_text(g.transcript)}")
    if result.turns:
        header = f"{'turn':>4}  {'v2v ms':>7}  {'reply s':>7}  {'barge-in':<12}  agent said"
        lines += [header, "-" * len(header)]
        for turn in result.turns:
            latency = f"{turn.voice_to_voice_ms:.0f}" if turn.voice_to_voice_ms is not None else "-"
            duration = f"{turn.reply_duration_s:.1f}" if turn.reply_duration_s is not None else "-"
            said = turn.failure.upper() if turn.failure else _clip_text(turn.transcript)
            lines.append(
                f"{turn.index:>4}  {latency:>7}  {duration:>7}  {_barge_in_cell(turn):<12}  {said}"
            )
    if result.recording:
        lines.append(f"recording: {result.recording}")
    return "\n".join(lines)


def _barge_in_cell(turn: TurnResult) -> str:
    if not turn.barge_in:
        return ""
    if turn.barge_in_ok is None:
        return "agent quiet"
    stopped = f"{turn.agent_stopped_ms:.0f}ms" if turn.agent_stopped_ms is not None else "?"
    return f"{'ok' if turn.barge_in_ok else 'FAIL'} {stopped}"


def _clip_text(text: str | None, width: int = 60) -> str:
    if text is None:
        return "(not transcribed)"
    return text if len(text) <= width else text[: width - 1] + "…"
