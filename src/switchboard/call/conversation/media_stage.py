"""The call's media stage: caller audio handled where it arrives; only events enter the pipeline.

In the conversation graph every 20-40 ms chunk of the caller's audio is pushed through each
Pipecat processor (an asyncio queue and a task switch each, observers on every push), though
only a few of them read it. The stage is the input transport's sink for that audio
(:class:`~switchboard.telephony.staged_input.StagedWebsocketInputTransport`)::

    Twilio media ─► serializer (µ-law → 16 kHz) ─► MediaStage.hear(chunk)
                                                     ├─ recording (the caller's channel)
                                                     ├─ noise filter (if the agent has one)
                                                     ├─ energy gate + Silero VAD ─► VAD started/stopped,
                                                     │                              user speaking  ─┐
                                                     ├─ STT: Deepgram socket / Whisper segment      │ pushed from the
                                                     │       (the active engine of the fallback)    │ input transport
                                                     └─ smart-turn's audio buffer                   │
    pipeline: input ─► STT (events, transcripts) ─► user aggregator ─► responder ─► TTS ─► output ◄─┘

Each consumer gets the audio as the graph gave it: the VAD the same analyzer and controller
(Pipecat's ``VADController``: the same events, the idle stop), the STT service its
``process_audio_frame``, smart-turn ``append_audio`` with the VAD's state before the chunk.
Barge-in, turn ends, the responder and the LLM context stay the pipeline's, driven by the same
events. Only Twilio streams have a staged input so far (``media_stage=lean``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.audio.vad.vad_controller import VADController
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    StartFrame,
    UserSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.services.stt_service import STTService

from switchboard.call.conversation.turn_end import TranscriptAwareTurnStopStrategy
from switchboard.engines.noise_filter import NoiseSuppressionFilter
from switchboard.engines.resilience import FallbackSwitcher

CallerAudioListener = Callable[[InputAudioRawFrame], None]
_MAX_HELD_CHUNKS = 500  # 10-20 s of audio: a pipeline that never starts does not hold the call's audio


class StageReady(FrameProcessor):
    """Placed after the STT: tells the stage when the pipeline's StartFrame got past it."""

    def __init__(self, stage: MediaStage, **kwargs):
        super().__init__(enable_direct_mode=True, **kwargs)
        self._stage = stage

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._stage.downstream_ready()


class MediaStage:
    """One call's caller audio: VAD, STT, smart-turn and recording, outside the pipeline."""

    def __init__(
        self,
        *,
        vad_analyzer: VADAnalyzer,
        stt: FrameProcessor,
        turn_stop: TranscriptAwareTurnStopStrategy,
        denoise: NoiseSuppressionFilter | None = None,
    ):
        """``stt``: the call's STT service, or its fallback switcher (fed its active service)."""
        # VADProcessor's own defaults: activity every 0.2 s, a stop after 1 s without audio.
        self._vad = VADController(vad_analyzer, speech_activity_period=0.2, audio_idle_timeout=1.0)
        self._stt = stt
        self._turn_stop = turn_stop
        self._denoise = denoise
        self._listeners: list[CallerAudioListener] = []
        self._source: FrameProcessor | None = None
        self._speaking = False
        self._started = False
        # Until the pipeline's StartFrame has passed the STT (Deepgram connected, Whisper's
        # buffer sized), its audio waits here, as it would have waited in the STT's queue.
        self._downstream_ready = False
        self._held: deque[tuple[InputAudioRawFrame, bool]] = deque(maxlen=_MAX_HELD_CHUNKS)

        @self._vad.event_handler("on_speech_started")
        async def _on_started(controller: VADController):
            self._speaking = True
            await self._broadcast(VADUserStartedSpeakingFrame, start_secs=vad_analyzer.params.start_secs)

        @self._vad.event_handler("on_speech_stopped")
        async def _on_stopped(controller: VADController):
            self._speaking = False
            await self._broadcast(VADUserStoppedSpeakingFrame, stop_secs=vad_analyzer.params.stop_secs)

        @self._vad.event_handler("on_speech_activity")
        async def _on_activity(controller: VADController):
            await self._broadcast(UserSpeakingFrame)

        @self._vad.event_handler("on_push_frame")
        async def _on_push(controller: VADController, frame: Frame, direction: FrameDirection):
            if self._source is not None:
                await self._source.push_frame(frame, direction)

        @self._vad.event_handler("on_broadcast_frame")
        async def _on_broadcast(controller: VADController, frame_cls: type[Frame], **kwargs):
            await self._broadcast(frame_cls, **kwargs)

    @property
    def speaking(self) -> bool:
        """Whether the VAD has the caller speaking (between its start and stop events)."""
        return self._speaking

    def on_caller_audio(self, listener: CallerAudioListener) -> None:
        """``listener`` gets each chunk as it arrived, before any filter (the recording)."""
        self._listeners.append(listener)

    async def _broadcast(self, frame_cls: type[Frame], **kwargs) -> None:
        if self._source is not None:
            await self._source.broadcast_frame(frame_cls, **kwargs)

    async def setup(self, source: FrameProcessor, setup: FrameProcessorSetup) -> None:
        self._source = source
        await self._vad.setup(setup)
        if self._denoise is not None:
            await self._denoise.start(setup.audio_in_sample_rate)

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self._vad.start()  # tells the pipeline the VAD's params, as VADProcessor does

    async def stop(self) -> None:
        await self._vad.stop()

    async def cleanup(self) -> None:
        await self._vad.cleanup()
        if self._denoise is not None:
            await self._denoise.stop()

    async def hear(self, frame: InputAudioRawFrame) -> None:
        """One chunk of the caller's audio, as the input transport read it."""
        for listener in self._listeners:
            listener(frame)
        if self._denoise is not None:
            frame.audio = await self._denoise.filter(frame.audio)
            if not frame.audio:
                return  # held back until a whole model frame is in
        # As in the graph: the VAD judges the chunk first (so the energy gate Whisper's
        # speculation reads is current), smart-turn gets it with the VAD's state before it, and
        # the STT has the chunk before the event it caused (which waits in the STT's queue).
        was_speaking = self._speaking
        await self._vad.process_frame(frame)
        if self._downstream_ready:
            await self._hand_on(frame, was_speaking)
        else:
            self._held.append((frame, was_speaking))

    async def downstream_ready(self) -> None:
        """The pipeline has started its STT: what was held goes to it, then chunks as they come."""
        while self._held:
            await self._hand_on(*self._held.popleft())
        self._downstream_ready = True

    async def _hand_on(self, frame: InputAudioRawFrame, was_speaking: bool) -> None:
        await self._feed_stt(frame)
        await self._turn_stop.hear(frame.audio, was_speaking)

    async def _feed_stt(self, frame: InputAudioRawFrame) -> None:
        stt = self._stt
        if isinstance(stt, FallbackSwitcher):
            await stt.hear_audio(frame)
        elif isinstance(stt, STTService):
            await stt.process_audio_frame(frame, FrameDirection.DOWNSTREAM)
