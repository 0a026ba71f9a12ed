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

The transport's receive loop runs the recording, the noise filter and the VAD (CPU, no waiting)
and never awaits a provider: what goes on to the STT and smart-turn, and the VAD's events behind
the audio they are about, wait on the call's own bounded queue, handed on by the stage's feeder
task. A Deepgram socket that stops taking audio then delays that call's transcripts, not the
reading of its socket: the caller's ``stop`` and hang-up are read when they arrive, and the call
ends and frees its slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from loguru import logger
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
from switchboard.observability import metrics

CallerAudioListener = Callable[[InputAudioRawFrame], None]
# 10-20 s of audio: an STT that never starts or stops taking audio does not hold the call's
# audio without end; past it the newest chunks are dropped (counted), never the events.
_MAX_BACKLOG_CHUNKS = 500
_Event = Callable[[], Awaitable[None]]  # a VAD event's push into the pipeline


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
        # What is for the STT and smart-turn (a chunk and the VAD's state before it) and the VAD's
        # events, in the order the VAD produced them, until the feeder hands them on. Until the
        # pipeline's StartFrame has passed the STT (Deepgram connected, Whisper's buffer sized)
        # they wait here, as they would have waited in the STT's queue.
        self._backlog: deque[tuple[InputAudioRawFrame, bool] | _Event] = deque()
        self._backlog_chunks = 0
        self._dropped = 0
        self._downstream_ready = False
        self._wake = asyncio.Event()
        self._feeder: asyncio.Task | None = None
        self._caused: list[_Event] | None = None  # set while the VAD judges a chunk

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
                self._queue(lambda: self._source.push_frame(frame, direction))

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

    @property
    def backlog(self) -> int:
        """Chunks and events heard but not yet handed on (waiting for the STT to start or keep up)."""
        return len(self._backlog)

    async def _broadcast(self, frame_cls: type[Frame], **kwargs) -> None:
        # Behind the audio it is about: the STT has every chunk before the event they caused.
        if (source := self._source) is not None:
            self._queue(lambda: source.broadcast_frame(frame_cls, **kwargs))

    async def setup(self, source: FrameProcessor, setup: FrameProcessorSetup) -> None:
        self._source = source
        await self._vad.setup(setup)
        if self._denoise is not None:
            await self._denoise.start(setup.audio_in_sample_rate)

    async def start(self) -> None:
        if not self._started:
            self._started = True
            assert self._source is not None, "setup() first"
            self._feeder = self._source.create_task(self._feed(), "media_stage::feed")
            await self._vad.start()  # tells the pipeline the VAD's params, as VADProcessor does

    async def stop(self) -> None:
        await self._vad.stop()
        await self._stop_feeding()

    async def cleanup(self) -> None:
        await self._stop_feeding()
        await self._vad.cleanup()
        if self._denoise is not None:
            await self._denoise.stop()

    async def _stop_feeding(self) -> None:
        """The call is over: what the STT has not taken yet is of no use to anyone."""
        feeder, self._feeder = self._feeder, None
        if feeder is not None and self._source is not None:
            await self._source.cancel_task(feeder)
        self._backlog.clear()
        self._backlog_chunks = 0

    async def hear(self, frame: InputAudioRawFrame) -> None:
        """One chunk of the caller's audio, as the input transport read it."""
        for listener in self._listeners:
            listener(frame)
        if self._denoise is not None:
            frame.audio = await self._denoise.filter(frame.audio)
            if not frame.audio:
                return  # held back until a whole model frame is in
        was_speaking = self._speaking
        # The VAD judges the chunk first (the energy gate Whisper's speculation reads is then
        # current); the events it causes queue behind the chunk, so the STT has the chunk before
        # them and smart-turn hears it with the VAD's state before it, as in the graph.
        self._caused = []
        try:
            await self._vad.process_frame(frame)
        finally:
            caused, self._caused = self._caused, None
        if self._backlog_chunks < _MAX_BACKLOG_CHUNKS:
            self._backlog.append((frame, was_speaking))
            self._backlog_chunks += 1
        else:
            self._drop()
        self._backlog.extend(caused)
        self._wake.set()

    def _queue(self, event: _Event) -> None:
        if self._caused is not None:
            self._caused.append(event)  # hear() queues it after the chunk that caused it
        else:
            self._backlog.append(event)  # the VAD's own timer (no audio for a while)
            self._wake.set()

    def _drop(self) -> None:
        metrics.MEDIA_STAGE_DROPPED_CHUNKS.inc()
        self._dropped += 1
        if self._dropped == 1:
            logger.warning(
                f"media stage: the STT is {_MAX_BACKLOG_CHUNKS} chunks behind; dropping caller audio"
            )

    async def downstream_ready(self) -> None:
        """The pipeline has started its STT: what waited goes to it, then chunks as they come."""
        self._downstream_ready = True
        self._wake.set()

    async def _feed(self) -> None:
        """Hands the backlog on in order; the only place the stage awaits the STT."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._downstream_ready and self._backlog:
                item = self._backlog.popleft()
                try:
                    if callable(item):
                        await item()
                        continue
                    self._backlog_chunks -= 1
                    frame, was_speaking = item
                    await self._feed_stt(frame)
                    await self._turn_stop.hear(frame.audio, was_speaking)
                except Exception:  # one chunk's failure must not leave the rest of the call unheard
                    logger.exception("media stage: handing on caller audio failed")

    async def _feed_stt(self, frame: InputAudioRawFrame) -> None:
        stt = self._stt
        if isinstance(stt, FallbackSwitcher):
            await stt.hear_audio(frame)
        elif isinstance(stt, STTService):
            await stt.process_audio_frame(frame, FrameDirection.DOWNSTREAM)
