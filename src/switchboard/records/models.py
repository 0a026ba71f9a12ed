"""The call record as it is stored, served and POSTed: typed, versioned pydantic models."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from switchboard.call_log import CallLogEvent, ToolCall, TransferSummary, Turn

Ingress = Literal["twilio", "livekit", "webrtc"]
Role = Literal["user", "agent"]


class TranscriptEntry(BaseModel):
    """One utterance; ``t`` is seconds from the start of the call."""

    role: Role
    text: str
    t: float = Field(ge=0)


class ProviderFallback(BaseModel):
    """A cloud provider this call left for the local engine."""

    provider: str
    kind: str


class RecordingRef(BaseModel):
    """Where a call's audio is: a key in the recording storage, and what it is."""

    key: str
    content_type: str = "audio/flac"
    sample_rate: int
    channels: int = 2
    duration_secs: float
    bytes: int


class CallAnalysis(BaseModel):
    """The LLM's post-call summary and success evaluation (``analysis`` in the agent config)."""

    summary: str | None = None
    success: bool | None = None
    reasons: str | None = None
    model: str


class CallSummary(BaseModel):
    """A row of the call list: everything but the transcript, turns and events."""

    model_config = ConfigDict(from_attributes=True)

    # 2: events are the call log's (``switchboard.call_log``); ended_by, transfer, tool_calls.
    version: Literal[2] = 2
    call_id: str = Field(min_length=1, max_length=200)
    call_sid: str | None = None
    stream_sid: str | None = Field(
        None, max_length=100, description="The media stream this record is of (Twilio's StreamSid, a room)."
    )
    resumed: bool = Field(
        False, description="Carried on by another worker after its stream was lost (one record, merged)."
    )
    from_number: str | None = None
    to_number: str | None = None
    agent: str
    ingress: Ingress
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    outcome: str
    failure_reason: str | None = None
    ended_by: str | None = Field(
        None, description="agent, caller, idle, max_duration, transfer, worker or error"
    )
    recording: RecordingRef | None = None

    @property
    def duration_secs(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None


class StoredCall(CallSummary):
    """Everything Switchboard keeps about one finished call: the call log's views."""

    transcript: list[TranscriptEntry] = Field(default_factory=list)
    turns: list[Turn] = Field(default_factory=list)
    events: list[CallLogEvent] = Field(
        default_factory=list, description="The call log but its turns, oldest first."
    )
    intents: list[str] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    transfer: TransferSummary | None = None
    provider_fallbacks: list[ProviderFallback] = Field(default_factory=list)
    analysis: CallAnalysis | None = None


class CallQuery(BaseModel):
    """Filters and paging of the call list; newest first."""

    model_config = ConfigDict(extra="forbid")

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    number: str | None = Field(None, description="matches the caller's or the called number")
    agent: str | None = None
    outcome: str | None = None
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0)


class CallPage(BaseModel):
    """One page of the call list."""

    calls: list[CallSummary]
    total: int
    limit: int
    offset: int


class DeadLetter(BaseModel):
    """A post-call webhook that failed every attempt, kept for inspection and replay."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    call_id: str
    url: str
    attempts: int
    last_error: str
    created_at: dt.datetime
