"""The call's media stage in-process: caller audio handled where it arrives, the same events out.

A known clip (real speech, through µ-law and the telephony upsampler as a Twilio stream brings
it) is fed once through the graph's VAD processor and once through a media stage; the VAD's
events come after the same chunks, the STT hears the same audio, smart-turn hears it with the
VAD's state, and the pipeline built with ``media_stage=lean`` has no per-chunk processor left.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.services.stt_service import STTService
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

from conftest import TEST_AGENT, Clip
from switchboard.agent.config import load_agent_config
from switchboard.audio import TelephonyUpsampler, read_wav, ulaw_decode, ulaw_encode
from switchboard.call.conversation.media_stage import MediaStage, StageReady
from switchboard.call.conversation.pipeline import build_call_pipeline
from switchboard.engines.noise_filter import InputAudioFilter, NoiseSuppressionFilter
from switchboard.engines.resilience import CircuitBreaker, EngineKind, FallbackSwitcher
from switchboard.engines.turn_detection import SharedSileroVADAnalyzer
from switchboard.settings import Settings
from switchboard.speech_end import SpeechEnergyGate
from switchboard.telephony.staged_input import StagedWebsocketTransport

RATE = 16000
CHUNK = 640  # 20 ms at 16 kHz, as the Twilio serializer hands it on
EVENTS = (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)


def caller_line(clip: Clip) -> list[bytes]:
    """Silence, the clip, a pause, the clip again, silence: over µ-law, upsampled in 20 ms chunks."""
    rng = np.random.default_rng(7)
    speech = read_wav(clip.path, 8000)
    floor = lambda secs: (rng.normal(0, 8, int(secs * 8000))).astype(np.int16)  # noqa: E731 (~-72 dBFS)
    line = np.concatenate([floor(0.6), speech, floor(1.2), speech, floor(1.2)])
    upsampler = TelephonyUpsampler()
    chunks = []
    for at in range(0, len(line) - 159, 160):
        narrow = ulaw_decode(ulaw_encode(line[at : at + 160]))
        chunks.append(upsampler.process(narrow).tobytes())
    return chunks


def vad_analyzer() -> SharedSileroVADAnalyzer:
    settings = Settings()
    return SharedSileroVADAnalyzer(
        params=VADParams(start_secs=settings.vad_start_secs, stop_secs=settings.vad_stop_secs),
        gate=SpeechEnergyGate(),
    )


def audio(chunks: list[bytes]) -> list[Frame]:
    return [InputAudioRawFrame(audio=c, sample_rate=RATE, num_channels=1) for c in chunks]


class HeardSTT(STTService):
    """An STT service that keeps the audio it was given and the VAD events that reached it."""

    def __init__(self, **kwargs):
        super().__init__(sample_rate=RATE, **kwargs)
        self.chunks: list[bytes] = []
        self.events: list[tuple[str, int]] = []  # (event, chunks heard before it)

    async def run_stt(self, audio: bytes):
        yield None

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        self.chunks.append(frame.audio)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, EVENTS) and direction is FrameDirection.DOWNSTREAM:
            self.events.append((type(frame).__name__, len(self.chunks)))
        await super().process_frame(frame, direction)


class HeardTurns:
    """Smart-turn's side of the stop strategy: the audio and whether the VAD had speech."""

    def __init__(self) -> None:
        self.is_speech: list[bool] = []

    async def hear(self, audio: bytes, is_speech: bool) -> None:
        self.is_speech.append(is_speech)


class StageHost(FrameProcessor):
    """Stands where the staged input transport does: hands audio to the stage, passes the rest."""

    def __init__(self, stage: MediaStage, turns: HeardTurns | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stage = stage
        self.turns = turns
        self.events: list[tuple[str, int]] = []  # (event, chunks handed on when it was pushed)

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        await self.stage.setup(self, setup)

    async def cleanup(self):
        await super().cleanup()
        await self.stage.cleanup()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.stage.hear(frame)
            return
        if isinstance(frame, EndFrame):
            await self.handed_on()
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.stage.start()

    async def handed_on(self) -> None:
        """Until the stage's feeder has handed on everything heard (the STT may be slow)."""
        async with asyncio.timeout(5):
            while self.stage.backlog:  # noqa: ASYNC110 (a test polls; the stage needs no drain event)
                await asyncio.sleep(0.001)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if isinstance(frame, EVENTS) and direction is FrameDirection.DOWNSTREAM and self.turns:
            # Smart-turn hears each chunk right after the STT: chunks handed on before the event.
            self.events.append((type(frame).__name__, len(self.turns.is_speech)))
        await super().push_frame(frame, direction)


async def through_the_graph(chunks: list[bytes]) -> HeardSTT:
    stt = HeardSTT()
    vad = VADProcessor(vad_analyzer=vad_analyzer(), enable_direct_mode=True)
    await run_test(Pipeline([vad, stt]), frames_to_send=audio(chunks))
    return stt


async def through_the_stage(chunks: list[bytes], **stage_kwargs) -> tuple[StageHost, HeardSTT, HeardTurns]:
    stt, turns = HeardSTT(), HeardTurns()
    stage = MediaStage(vad_analyzer=vad_analyzer(), stt=stt, turn_stop=turns, **stage_kwargs)  # type: ignore[arg-type]
    host = StageHost(stage, turns)
    await run_test(Pipeline([host, stt, StageReady(stage)]), frames_to_send=audio(chunks))
    return host, stt, turns


@pytest.fixture(scope="module")
def line(speech_clips: dict[str, Clip]) -> list[bytes]:
    return caller_line(speech_clips["osr_us_0010_s05_8k.wav"])  # "Rice is often served..."


async def test_the_stage_reports_speech_after_the_same_chunks_as_the_graphs_vad(line) -> None:
    graph = await through_the_graph(line)
    host, stt, _ = await through_the_stage(line)
    assert [e for e, _ in graph.events].count("VADUserStartedSpeakingFrame") >= 2, graph.events
    assert host.events == graph.events
    # Every event reached the STT down the pipeline, in order, after the audio it was about.
    assert [e for e, _ in stt.events] == [e for e, _ in graph.events]
    assert all(heard >= at for (_, heard), (_, at) in zip(stt.events, graph.events, strict=True))


async def test_the_stt_hears_every_chunk_and_the_pipeline_none(line) -> None:
    graph = await through_the_graph(line)
    _, stt, _ = await through_the_stage(line)
    assert stt.chunks == graph.chunks == line


async def test_smart_turn_hears_each_chunk_with_the_vads_state_before_it(line) -> None:
    host, _, turns = await through_the_stage(line)
    speaking, expected = False, []
    events = dict((at, name) for name, at in host.events)
    for index in range(len(line)):
        if index in events:
            speaking = events[index] == "VADUserStartedSpeakingFrame"
        expected.append(speaking)
    assert turns.is_speech == expected and any(expected)


async def test_the_recording_hears_the_line_and_the_stt_the_filtered_audio(line) -> None:
    recorded: list[bytes] = []
    stt, turns = HeardSTT(), HeardTurns()
    stage = MediaStage(
        vad_analyzer=vad_analyzer(), stt=stt, turn_stop=turns, denoise=NoiseSuppressionFilter()  # type: ignore[arg-type]
    )
    stage.on_caller_audio(lambda frame: recorded.append(frame.audio))
    await run_test(Pipeline([StageHost(stage), stt, StageReady(stage)]), frames_to_send=audio(line))
    assert recorded == line
    assert stt.chunks and stt.chunks != line
    assert abs(sum(map(len, stt.chunks)) - sum(map(len, line))) <= 2 * CHUNK  # RNNoise's hold-back


class StalledSTT(HeardSTT):
    """An STT whose send does not return until let go: a Deepgram socket nobody reads (a starved
    provider), the transport's send buffer full."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.go = asyncio.Event()

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        await self.go.wait()
        await super().process_audio_frame(frame, direction)


class ReceiveLoop(StageHost):
    """Stands where the transport's receive loop does: counts the chunks it got past while the
    STT was stalled (it would read the caller's ``stop`` and hang-up next), then lets the STT go."""

    def __init__(self, stage: MediaStage, stt: StalledSTT, turns: HeardTurns, **kwargs):
        super().__init__(stage, turns, **kwargs)
        self.stt = stt
        self.read_while_stalled = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, InputAudioRawFrame):
            try:
                async with asyncio.timeout(0.5):
                    await self.stage.hear(frame)
            except TimeoutError:
                self.stt.go.set()  # the loop waited for the STT: counted below, the test goes on
            self.read_while_stalled += not self.stt.go.is_set()
            return
        if isinstance(frame, EndFrame):
            self.stt.go.set()  # the provider recovers: what waited goes to it in order
        await super().process_frame(frame, direction)


async def test_a_stalled_stt_does_not_hold_up_the_callers_socket(line) -> None:
    graph = await through_the_graph(line)
    stt, turns = StalledSTT(), HeardTurns()
    stage = MediaStage(vad_analyzer=vad_analyzer(), stt=stt, turn_stop=turns)  # type: ignore[arg-type]
    loop = ReceiveLoop(stage, stt, turns)
    await run_test(Pipeline([loop, stt, StageReady(stage)]), frames_to_send=audio(line))
    assert loop.read_while_stalled == len(line)
    # Nothing lost or reordered by the wait: every chunk, each event behind the audio it is about.
    assert stt.chunks == line
    assert loop.events == graph.events
    assert [e for e, _ in stt.events] == [e for e, _ in graph.events]


async def test_audio_waits_for_the_stt_to_start_and_then_comes_in_order(line) -> None:
    stt, turns = HeardSTT(), HeardTurns()
    stage = MediaStage(vad_analyzer=vad_analyzer(), stt=stt, turn_stop=turns)  # type: ignore[arg-type]
    host = StageHost(stage)

    class LateStart(FrameProcessor):
        """An STT that takes its time to start (Deepgram connecting)."""

        async def process_frame(self, frame: Frame, direction: FrameDirection):
            await super().process_frame(frame, direction)
            if isinstance(frame, StartFrame):
                assert stt.chunks == [], "audio reached the STT before the pipeline started it"
                await asyncio.sleep(0.2)
            await self.push_frame(frame, direction)

    frames = [*audio(line[:50]), SleepFrame(0.5), *audio(line[50:100])]
    await run_test(Pipeline([host, LateStart(), stt, StageReady(stage)]), frames_to_send=frames)
    assert stt.chunks == line[:100] and len(turns.is_speech) == 100


async def test_the_fallback_switcher_feeds_its_active_stt_and_keeps_the_utterance() -> None:
    primary, fallback = HeardSTT(), HeardSTT()
    switcher = FallbackSwitcher(
        primary,
        fallback,
        provider="deepgram",
        kind=EngineKind.STT,
        breaker=CircuitBreaker("deepgram", failure_threshold=3, reset_secs=30),
        response_timeout_secs=3,
    )
    frames = audio([bytes([i]) * CHUNK for i in range(3)])
    await switcher.hear_audio(frames[0])
    assert primary.chunks == [frames[0].audio] and fallback.chunks == []
    assert await switcher.switch_to_fallback() and switcher.active_service is fallback
    await switcher.hear_audio(frames[1])
    assert fallback.chunks == [frames[1].audio] and primary.chunks == [frames[0].audio]
    # What the provider heard is what a replay hands the fallback (here: the pre-roll).
    assert switcher._pending_speech is not None and list(switcher._pending_speech._pre_roll) == [frames[0]]


class LoopTransport(BaseTransport):
    """A transport whose input cannot hand its audio over (as a LiveKit room's or a browser's)."""

    def __init__(self) -> None:
        super().__init__()
        self._input, self._output = FrameProcessor(name="in"), FrameProcessor(name="out")
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output


def stages(call) -> list[FrameProcessor]:
    """The call's processors, between the source and sink its pipeline and the worker add."""
    return call.worker._pipeline.processors[1].processors[1:-1]


def twilio_like_transport() -> StagedWebsocketTransport:
    class NoSocket:
        headers: dict[str, str] = {}

    return StagedWebsocketTransport(
        NoSocket(),  # type: ignore[arg-type]  # never read: the pipeline is only built
        FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
    )


@pytest.fixture(scope="module")
def noisy_agent():
    agent = load_agent_config(TEST_AGENT)
    return agent.model_copy(update={"noise_suppression": agent.noise_suppression.model_copy(update={"enabled": True})})


def test_a_lean_twilio_call_has_no_caller_audio_processor_before_its_stt(noisy_agent) -> None:
    transport = twilio_like_transport()
    call = build_call_pipeline(
        transport, noisy_agent, Settings(inference_threads=1, media_stage="lean"), out_sample_rate=8000
    )
    processors = stages(call)
    assert call.stage is not None and transport.input()._sink is call.stage
    assert processors[0] is transport.input() and isinstance(processors[1], STTService)
    assert isinstance(processors[2], StageReady)
    assert not any(isinstance(p, VADProcessor | InputAudioFilter) for p in processors)


def test_the_graph_setting_and_other_ingresses_keep_the_vad_in_the_pipeline(noisy_agent) -> None:
    transport = twilio_like_transport()
    graph = build_call_pipeline(transport, noisy_agent, Settings(inference_threads=1, media_stage="graph"), out_sample_rate=8000)
    assert graph.stage is None and transport.input()._sink is None
    assert [type(p) for p in stages(graph)[1:3]] == [InputAudioFilter, VADProcessor]
    # A LiveKit room or a browser has no staged input yet: lean leaves it on the graph.
    other = build_call_pipeline(
        LoopTransport(), noisy_agent, Settings(inference_threads=1, media_stage="lean"), out_sample_rate=8000
    )
    assert other.stage is None and isinstance(stages(other)[2], VADProcessor)
