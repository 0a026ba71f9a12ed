"""Running one call: the Twilio media stream handed to a Pipecat pipeline, and its record."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from loguru import logger
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

from switchboard.agent.config import AgentConfig
from switchboard.agent.pipeline import build_call_pipeline
from switchboard.audio import TELEPHONY_RATE
from switchboard.observability import metrics
from switchboard.settings import Settings
from switchboard.telephony.media_socket import MediaSocketGuard
from switchboard.telephony.twilio import PlaybackMarker, StreamStart, SwitchboardTwilioSerializer

MAX_CALL_SECS = 3600


@dataclass
class CallRecord:
    """What happened on one call, kept in memory for inspection and benchmarks."""

    call_sid: str
    stream_sid: str
    call_id: str = ""
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    outcome: str = "active"
    intents: list[str] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)
    marks_played: list[str] = field(default_factory=list)


class CallRegistry:
    """Live and recently finished calls of this process (bounded)."""

    def __init__(self, keep: int = 200):
        self._records: OrderedDict[str, CallRecord] = OrderedDict()
        self._keep = keep

    def add(self, record: CallRecord) -> None:
        self._records[record.call_sid] = record
        while len(self._records) > self._keep:
            self._records.popitem(last=False)

    def get(self, key: str) -> CallRecord | None:
        """A call by Twilio CallSid or Switchboard call id."""
        if key in self._records:
            return self._records[key]
        return next((r for r in self._records.values() if r.call_id == key), None)

    def recent(self) -> list[CallRecord]:
        return list(reversed(self._records.values()))

    @property
    def active(self) -> int:
        return sum(1 for r in self._records.values() if r.outcome == "active")


async def run_twilio_call(
    websocket: MediaSocketGuard,
    start: StreamStart,
    agent: AgentConfig,
    settings: Settings,
    registry: CallRegistry,
    *,
    call_id: str | None = None,
) -> CallRecord:
    """Serve one Twilio media stream until either side hangs up."""
    auth_token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    can_hang_up = bool(auth_token and settings.twilio_account_sid and start.call_sid)
    serializer = SwitchboardTwilioSerializer(
        stream_sid=start.stream_sid,
        call_sid=start.call_sid or None,
        account_sid=settings.twilio_account_sid,
        auth_token=auth_token if can_hang_up else None,
        # Without credentials, closing the stream ends <Connect> and the TwiML's <Hangup/> follows.
        params=SwitchboardTwilioSerializer.InputParams(auto_hang_up=can_hang_up),
        input_frame_ms=settings.input_frame_ms,
        socket=websocket,
    )
    transport = FastAPIWebsocketTransport(
        websocket,  # type: ignore[arg-type]  # the guard stands in for the Starlette WebSocket
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
            session_timeout=MAX_CALL_SECS,
        ),
    )
    call = build_call_pipeline(
        transport, agent, settings, out_sample_rate=TELEPHONY_RATE, before_output=[PlaybackMarker()]
    )
    record = CallRecord(
        call_sid=start.call_sid or start.stream_sid, stream_sid=start.stream_sid, call_id=call_id or ""
    )
    registry.add(record)
    metrics.ACTIVE_CALLS.inc()
    try:
        runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
        await runner.add_workers(call.worker)
        await runner.run()
        record.outcome = "completed"
    except Exception:
        record.outcome = "failed"
        metrics.PIPELINE_ERRORS.labels(stage="call").inc()
        logger.exception(f"call {record.call_sid}: pipeline failed")
    finally:
        metrics.ACTIVE_CALLS.dec()
        metrics.CALLS_TOTAL.labels(outcome=record.outcome).inc()
        record.ended_at = time.time()
        metrics.CALL_DURATION_SECONDS.labels(outcome=record.outcome).observe(record.ended_at - record.started_at)
        record.intents = [m.name for m in call.responder.matches]
        record.turns = call.timings.as_dicts()
        record.marks_played = list(serializer.marks_played)
        logger.info(f"call {record.call_sid}: {record.outcome}, intents {record.intents}")
    return record
