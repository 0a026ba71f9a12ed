"""Per-turn stage timings seen from inside the agent, for the latency breakdown.

Each finished turn is a :class:`~switchboard.call_log.Turn` of the call's log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

from switchboard.call_log import CallLog, Turn
from switchboard.observability import metrics
from switchboard.observability.headroom import TURN_LATENCY_MS
from switchboard.speech_end import SpeechEnergyGate


@dataclass
class _Pending:
    speech_end: float
    timing: Turn = field(default_factory=Turn)


class TurnTimingObserver(BaseObserver):
    """Watches frames go by and records when each stage of a turn happened."""

    frame_types = (
        VADUserStoppedSpeakingFrame,
        VADUserStartedSpeakingFrame,
        InterruptionFrame,
        TranscriptionFrame,
        UserStoppedSpeakingFrame,
        TTSAudioRawFrame,
        BotStartedSpeakingFrame,
    )

    def __init__(
        self,
        *,
        gate: SpeechEnergyGate,
        stt_engine: str,
        tts_engine: str,
        log: CallLog | None = None,
        **kwargs,
    ):
        # Every frame is pushed through ~8 processors; one look at each is enough.
        super().__init__(observe_every_push=False, **kwargs)
        self._gate = gate
        self._engines = {"transcript": stt_engine, "first_tts_audio": tts_engine}
        self._pending: _Pending | None = None
        self._log = log
        self.turns: list[Turn] = []  # also in the call's log, if it has one

    async def on_push_frame(self, data: FramePushed):
        if not data.first_push:
            return
        frame, now = data.frame, time.monotonic()
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            # The VAD stops after its window of silence; the gate knows how long that silence is.
            self._pending = _Pending(speech_end=now - self._gate.silent_s)
            self._pending.timing.vad_stop_ms = self._since(now)
        elif self._pending is None:
            return
        elif isinstance(frame, VADUserStartedSpeakingFrame | InterruptionFrame):
            # The caller resumed before we answered: this turn is not over yet.
            if self._pending.timing.turn_end_ms is None:
                self._pending = None
        elif isinstance(frame, TranscriptionFrame):
            self._pending.timing.transcript = f"{self._pending.timing.transcript} {frame.text}".strip()
            self._pending.timing.transcript_ms = self._since(now)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._pending.timing.turn_end_ms = self._since(now)
        elif isinstance(frame, TTSAudioRawFrame) and self._pending.timing.turn_end_ms is not None:
            if self._pending.timing.first_tts_audio_ms is None:
                self._pending.timing.first_tts_audio_ms = self._since(now)
        elif isinstance(frame, BotStartedSpeakingFrame) and self._pending.timing.turn_end_ms is not None:
            self._pending.timing.bot_started_ms = self._since(now)
            self._finish()

    def _since(self, now: float) -> float:
        assert self._pending is not None
        return round((now - self._pending.speech_end) * 1000, 1)

    def _finish(self) -> None:
        assert self._pending is not None
        timing = self._pending.timing
        self.turns.append(timing)
        if self._log is not None:
            self._log.add(timing)
        self._pending = None
        for stage in ("turn_end", "transcript", "first_tts_audio", "bot_started"):
            value = getattr(timing, f"{stage}_ms")
            if value is not None:
                engine = self._engines.get(stage, "pipeline")
                metrics.STAGE_LATENCY_MS.labels(stage=stage, engine=engine).observe(value)
        if timing.bot_started_ms is not None:
            metrics.TURN_RTT_MS.observe(timing.bot_started_ms)
            TURN_LATENCY_MS.add(timing.bot_started_ms)
