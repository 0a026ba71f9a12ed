"""``CallCapture``: one observer per call that keeps what the call record needs.

It sees the frames between processors (it adds no processor to the pipeline): both sides'
transcript with timestamps, barge-ins (into the call's log), the providers the call fell back
from, and, when the agent records calls, both sides' audio. Keypad presses are call control's
to log (:mod:`switchboard.call.conversation.keypad`), once.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed, ProcessorSetUp
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport

from switchboard.agent.config import AgentConfig
from switchboard.call_log import CallLog, Interrupted
from switchboard.engines.resilience import FallbackSwitcher
from switchboard.records.models import Ingress, ProviderFallback, TranscriptEntry
from switchboard.records.recording import DualChannelRecorder
from switchboard.spoken_lines import SpokenLines


class CallCapture(BaseObserver):
    """What one call said and did, as the record will keep it."""

    def __init__(
        self,
        *,
        agent: str,
        ingress: Ingress,
        config: AgentConfig | None = None,
        record_audio: bool = False,
        from_number: str | None = None,
        to_number: str | None = None,
        log: CallLog | None = None,
        **kwargs: Any,
    ):
        super().__init__(observe_every_push=False, **kwargs)
        self.agent = agent
        self.config = config  # the answering agent's settings (recording, webhook, analysis)
        self.ingress: Ingress = ingress
        self.from_number = from_number
        self.to_number = to_number
        self.started_at = dt.datetime.now(dt.UTC)
        self.log = log if log is not None else CallLog()
        self.transcript: list[TranscriptEntry] = []
        self.recorder = DualChannelRecorder() if record_audio else None
        self._lines = SpokenLines()
        self._switchers: list[FallbackSwitcher] = []
        # What on_push_frame reads (see switchboard.call.conversation.observers): audio only if recording.
        audio = (InputAudioRawFrame, OutputAudioRawFrame) if self.recorder is not None else ()
        self.frame_types = (*audio, *SpokenLines.FRAMES)

    async def on_processor_setup(self, data: ProcessorSetUp) -> None:
        if isinstance(data.processor, FallbackSwitcher):
            self._switchers.append(data.processor)

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, InputAudioRawFrame):
            if self.recorder is not None and isinstance(data.source, BaseInputTransport):
                self.recorder.caller(frame.audio, frame.sample_rate, time.monotonic())
        elif isinstance(frame, OutputAudioRawFrame):
            if self.recorder is not None and isinstance(data.source, BaseOutputTransport):
                self.recorder.agent(frame.audio, frame.sample_rate, time.monotonic())
        elif (said := self._lines.see(frame)) is not None:
            role, text = said
            if role == "interrupted":
                self.log.add(Interrupted())
            else:
                self._said(role, text)

    def hear_caller(self, frame: InputAudioRawFrame) -> None:
        """The caller's audio as it arrived, from a media stage that keeps it out of the pipeline."""
        if self.recorder is not None:
            self.recorder.caller(frame.audio, frame.sample_rate, time.monotonic())

    def _said(self, role: str, text: str) -> None:
        self.transcript.append(TranscriptEntry(role=role, text=text, t=self.log.now()))  # type: ignore[arg-type]

    def provider_fallbacks(self) -> list[ProviderFallback]:
        """Providers this call left mid-call for the local engine."""
        return [
            ProviderFallback(provider=s.provider, kind=str(s.kind))
            for s in self._switchers
            if not s.on_primary
        ]
