"""The per-call Pipecat pipeline: VAD → STT → turn end → responder → TTS, full duplex.

With ``media_stage=lean`` (Twilio streams) the caller's audio stays out of it: the call's
:class:`~switchboard.call.conversation.media_stage.MediaStage` runs the VAD and feeds the STT
and smart-turn, and the pipeline starts at the STT with the stage's events.

Everything heavy (Whisper, Piper, Silero, smart-turn) is loaded once per process and shared;
building a call's pipeline only allocates per-call state, so it is cheap enough to do while
the caller's first audio is already arriving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, InputAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from switchboard.agent.config import AgentConfig
from switchboard.agent.intents import IntentMatcher
from switchboard.audio import PIPELINE_IN_RATE
from switchboard.call.conversation.media_stage import MediaStage, StageReady
from switchboard.call.conversation.observers import CallPipelineWorker
from switchboard.call.conversation.timing import TurnTimingObserver
from switchboard.call.conversation.transcript_redactor import TranscriptRedactor
from switchboard.call.conversation.turn_end import TranscriptAwareTurnStopStrategy, ends_a_sentence
from switchboard.call_log import CallLog
from switchboard.engines import build_responder, build_stt, build_tts
from switchboard.engines.noise_filter import noise_filter, noise_suppression
from switchboard.engines.resilience import ResilientResponder
from switchboard.engines.scripted import ScriptedResponder
from switchboard.engines.turn_detection import SharedSileroVADAnalyzer, SharedSmartTurnAnalyzer
from switchboard.settings import Settings
from switchboard.speech_end import SpeechEnergyGate
from switchboard.telephony.staged_input import StagedWebsocketInputTransport


class CallerAudioStop(FrameProcessor):
    """Ends the caller's audio frames once the user aggregator has had them.

    VAD, STT and end-of-turn detection are upstream of here; every processor downstream
    (responder, TTS, output, the engines' fallback switchers) would only pass 50 audio frames a
    second per call along to the output transport, which drops them.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if not (isinstance(frame, InputAudioRawFrame) and direction is FrameDirection.DOWNSTREAM):
            await self.push_frame(frame, direction)


@dataclass
class CallPipeline:
    """A call's pipeline worker plus what we observe of it."""

    worker: PipelineWorker
    responder: ScriptedResponder | ResilientResponder
    timings: TurnTimingObserver
    context: LLMContext  # the conversation so far, as the responder sees it
    stage: MediaStage | None = None  # where the caller's audio goes (None: down the pipeline)


def _llm_view(agent: AgentConfig) -> list[FrameProcessor]:
    """A redactor after the STT when the agent keeps PII from its responder during the call."""
    if agent.redaction.enabled and not agent.redaction.llm_sees_pii:
        return [TranscriptRedactor(agent.redaction.entities)]
    return []


def _media_stage(
    transport: BaseTransport,
    settings: Settings,
    agent: AgentConfig,
    vad_analyzer: SharedSileroVADAnalyzer,
    stt: FrameProcessor,
    turn_stop: TranscriptAwareTurnStopStrategy,
) -> MediaStage | None:
    """The call's media stage, handed the input's audio, if the settings ask for one and the
    transport's input can hand its audio over (a Twilio stream); else None (the graph path)."""
    source = transport.input()
    if settings.media_stage != "lean" or not isinstance(source, StagedWebsocketInputTransport):
        return None
    stage = MediaStage(
        vad_analyzer=vad_analyzer,
        stt=stt,
        turn_stop=turn_stop,
        denoise=noise_suppression(agent.noise_suppression),
    )
    source.hand_audio_to(stage)
    logger.info("caller audio through the media stage")
    return stage


def build_call_pipeline(
    transport: BaseTransport,
    agent: AgentConfig,
    settings: Settings,
    *,
    out_sample_rate: int,
    before_output: Sequence[FrameProcessor] = (),
    history: Sequence[dict] = (),
    opening: str | None = None,
    log: CallLog | None = None,
) -> CallPipeline:
    """Assemble one call's pipeline around a transport.

    ``before_output`` are transport-specific processors placed just before the output
    (for example Twilio's playback marks). ``history`` and ``opening``: a call carried on from
    another worker starts from its conversation so far, with ``opening`` instead of the greeting.
    Each finished turn's timings go to ``log``.
    """
    # One gate per call: the VAD, speculative STT and the timings share the caller's energy.
    gate = SpeechEnergyGate()
    vad_analyzer = SharedSileroVADAnalyzer(
        params=VADParams(start_secs=settings.vad_start_secs, stop_secs=settings.vad_stop_secs),
        gate=gate,
    )
    turn_analyzer = SharedSmartTurnAnalyzer(params=SmartTurnParams(stop_secs=settings.turn_stop_secs))
    matcher = IntentMatcher(agent)
    # An LLM can answer anything, so only punctuation says the caller finished.
    scripted = settings.responder == "scripted"
    stop_strategy = TranscriptAwareTurnStopStrategy(
        turn_analyzer=turn_analyzer,
        is_complete=lambda text: ends_a_sentence(text)
        or (scripted and matcher.match(text).intent is not None),
    )
    context = LLMContext(messages=[dict(m) for m in history])
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(
                stop=[stop_strategy]
            ),
        ),
    )
    responder = build_responder(settings, agent)
    stt = build_stt(settings, gate)
    stage = _media_stage(transport, settings, agent, vad_analyzer, stt, stop_strategy)
    if stage is not None:
        caller_audio: list[FrameProcessor] = []  # the stage has it: only its events come down
        after_stt: list[FrameProcessor] = [StageReady(stage)]
    else:
        denoise = noise_filter(agent.noise_suppression)
        vad = VADProcessor(
            vad_analyzer=vad_analyzer,
            # Runs in the input transport's task: one asyncio hand-off less per 20 ms frame.
            enable_direct_mode=True,
        )
        caller_audio = [*([denoise] if denoise else []), vad]
        after_stt = []
    pipeline = Pipeline(
        [
            transport.input(),
            *caller_audio,
            stt,
            *after_stt,
            *_llm_view(agent),
            aggregators.user(),
            CallerAudioStop(enable_direct_mode=True),
            responder,
            build_tts(settings),
            *before_output,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    timings = TurnTimingObserver(
        gate=gate, stt_engine=settings.stt_engine, tts_engine=settings.tts_engine, log=log
    )
    worker = CallPipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=PIPELINE_IN_RATE,
            audio_out_sample_rate=out_sample_rate,
            enable_metrics=True,
        ),
        observers=[timings],
        enable_rtvi=False,
        # Pipecat's own turn and latency observers would see every frame of every call a second
        # and third time; TurnTimingObserver already measures what we report.
        enable_turn_tracking=False,
        idle_timeout_secs=120,
    )

    @transport.event_handler("on_client_connected")
    async def _greet(_transport, _client):
        await worker.queue_frames([TTSSpeakFrame(opening or agent.opening())])

    @transport.event_handler("on_client_disconnected")
    async def _hung_up(_transport, _client):
        await worker.cancel()

    return CallPipeline(
        worker=worker, responder=responder, timings=timings, context=context, stage=stage
    )
