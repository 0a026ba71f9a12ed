"""Building a call's pipeline in-process with the offline engines (loaded once for the module):
the stages in order, the greeting or a resumed call's opening, the history it carries on from.
"""

from __future__ import annotations

import pytest
from pipecat.frames.frames import Frame, TTSSpeakFrame
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport

from conftest import TEST_AGENT
from switchboard.agent.config import load_agent_config
from switchboard.call.conversation.pipeline import (
    PIPELINE_IN_RATE,
    CallerAudioStop,
    build_call_pipeline,
)
from switchboard.engines.piper_tts import LocalPiperTTSService
from switchboard.engines.scripted import ScriptedResponder
from switchboard.settings import Settings


class Edge(FrameProcessor):
    """A transport's input or output, as a named placeholder."""


class LoopTransport(BaseTransport):
    """The least a transport must be for the pipeline: an input, an output, connect events."""

    def __init__(self) -> None:
        super().__init__()
        self._input, self._output = Edge(name="in"), Edge(name="out")
        # Run inline (a real transport runs them as tasks), so the test sees their effect at once.
        self._register_event_handler("on_client_connected", sync=True)
        self._register_event_handler("on_client_disconnected", sync=True)

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output


class Mark(FrameProcessor):
    """An ingress's own processor placed before the output (Twilio's playback marks)."""


@pytest.fixture(scope="module")
def agent():
    return load_agent_config(TEST_AGENT)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(inference_threads=1)


def stages(call) -> list[FrameProcessor]:
    """The call's processors, between the source and sink its pipeline and the worker add."""
    outer = call.worker._pipeline.processors  # the worker's source, the call's pipeline, its sink
    return outer[1].processors[1:-1]


async def greeted_with(call, transport: LoopTransport) -> list[str]:
    queued: list[Frame] = []

    async def capture(frames: list[Frame]) -> None:
        queued.extend(frames)

    call.worker.queue_frames = capture  # what the pipeline would speak first
    await transport._call_event_handler("on_client_connected", None)
    return [f.text for f in queued if isinstance(f, TTSSpeakFrame)]


async def test_a_call_runs_vad_stt_turn_end_responder_tts_then_the_ingress_output(agent, settings) -> None:
    transport, mark = LoopTransport(), Mark()
    call = build_call_pipeline(transport, agent, settings, out_sample_rate=8000, before_output=[mark])
    processors = stages(call)
    assert processors[0] is transport.input() and processors[-2] is transport.output()
    assert type(processors[-1]).__name__ == "LLMAssistantAggregator", "what was said joins the context"
    assert isinstance(processors[1], VADProcessor)
    kinds = [type(p) for p in processors]
    responder_at = kinds.index(ScriptedResponder)
    assert kinds.index(CallerAudioStop) < responder_at, "the caller's audio stops before the responder"
    assert isinstance(processors[responder_at + 1], LocalPiperTTSService)
    assert processors[responder_at + 2] is mark and processors[responder_at + 3] is transport.output()
    assert call.worker._params.audio_in_sample_rate == PIPELINE_IN_RATE
    assert call.worker._params.audio_out_sample_rate == 8000
    assert call.responder is processors[responder_at]
    assert await greeted_with(call, transport) == [agent.opening()]


async def test_a_resumed_call_opens_with_its_line_and_carries_the_conversation_on(agent, settings) -> None:
    transport = LoopTransport()
    history = [
        {"role": "assistant", "content": agent.greeting},
        {"role": "user", "content": "rice is often served in round bowls"},
        {"role": "assistant", "content": "You talked about food."},
    ]
    call = build_call_pipeline(
        transport, agent, settings, out_sample_rate=16000, history=history, opening="Sorry, where were we?"
    )
    assert call.context.get_messages() == history
    history.append({"role": "user", "content": "changed after the build"})
    assert len(call.context.get_messages()) == 3, "the call keeps its own copy"
    assert await greeted_with(call, transport) == ["Sorry, where were we?"]


async def test_two_calls_share_the_loaded_models_but_not_their_state(agent, settings) -> None:
    first = build_call_pipeline(LoopTransport(), agent, settings, out_sample_rate=8000)
    second = build_call_pipeline(LoopTransport(), agent, settings, out_sample_rate=8000)
    tts = [next(p for p in stages(c) if isinstance(p, LocalPiperTTSService)) for c in (first, second)]
    assert tts[0] is not tts[1] and tts[0]._engine is tts[1]._engine  # one Piper voice per process
    assert first.responder is not second.responder and first.context is not second.context
    assert first.timings is not second.timings
