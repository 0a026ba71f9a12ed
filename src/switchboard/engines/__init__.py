"""STT, TTS and responder engines, chosen by name from one registry.

Adding an engine means adding a module and one entry in ``STT_ENGINES``, ``TTS_ENGINES`` or
``RESPONDERS``. Cloud engines are wrapped with their local counterpart (``LOCAL_STT``,
``LOCAL_TTS``, the scripted responder) by :mod:`switchboard.engines.resilience`, so a provider
outage moves a call to the local engine instead of dropping it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from switchboard.agent.config import AgentConfig
from switchboard.agent.intents import IntentMatcher
from switchboard.engines.resilience import EngineKind, ResilientResponder, with_fallback
from switchboard.engines.scripted import ScriptedResponder
from switchboard.errors import EngineError
from switchboard.settings import Settings
from switchboard.speech_end import SpeechEnergyGate

LOCAL_STT = "whisper"
LOCAL_TTS = "piper"
LOCAL_RESPONDER = "scripted"


def _whisper(settings: Settings, gate: SpeechEnergyGate | None = None) -> STTService:
    from switchboard.engines.whisper import shared_whisper
    from switchboard.engines.whisper_stt import LocalWhisperSTTService

    engine = shared_whisper(settings.inference_threads, settings.whisper_full_window)
    return LocalWhisperSTTService(
        engine=engine, gate=gate, speculate_after_secs=settings.speculative_stt_after_secs
    )


def _piper(settings: Settings) -> TTSService:
    from switchboard.engines.piper_tts import LocalPiperTTSService, shared_piper

    return LocalPiperTTSService(engine=shared_piper(settings.inference_threads))


def _deepgram(settings: Settings) -> STTService:
    from switchboard.engines.deepgram import build_deepgram_stt

    return build_deepgram_stt(settings)


def _elevenlabs(settings: Settings) -> TTSService:
    from switchboard.engines.elevenlabs import build_elevenlabs_tts

    return build_elevenlabs_tts(settings)


def _scripted(settings: Settings, agent: AgentConfig) -> FrameProcessor:
    return ScriptedResponder(IntentMatcher(agent))


def _openai(settings: Settings, agent: AgentConfig) -> FrameProcessor:
    from switchboard.engines.llm import build_openai_llm

    return build_openai_llm(settings, agent)


def _anthropic(settings: Settings, agent: AgentConfig) -> FrameProcessor:
    from switchboard.engines.llm import build_anthropic_llm

    return build_anthropic_llm(settings, agent)


STT_ENGINES: dict[str, Callable[[Settings], STTService]] = {
    "whisper": _whisper,
    "deepgram": _deepgram,
}
TTS_ENGINES: dict[str, Callable[[Settings], TTSService]] = {
    "piper": _piper,
    "elevenlabs": _elevenlabs,
}
RESPONDERS: dict[str, Callable[[Settings, AgentConfig], FrameProcessor]] = {
    "scripted": _scripted,
    "openai": _openai,
    "anthropic": _anthropic,
}

_F = TypeVar("_F")


def _lookup(table: dict[str, _F], name: str, what: str) -> _F:
    try:
        return table[name]
    except KeyError:
        raise EngineError(f"unknown {what} {name!r}; choose one of {sorted(table)}") from None


def build_stt(settings: Settings, gate: SpeechEnergyGate | None = None) -> FrameProcessor:
    """A new STT service for one call (a cloud engine comes with a Whisper fallback).

    ``gate`` is the call's speech-energy gate, which lets Whisper transcribe speculatively.
    """
    factory = _lookup(STT_ENGINES, settings.stt_engine, "STT engine")
    if settings.stt_engine == LOCAL_STT:
        return _whisper(settings, gate)
    return with_fallback(
        settings.stt_engine,
        EngineKind.STT,
        settings,
        lambda: factory(settings),
        lambda: _whisper(settings, gate),
    )


def build_tts(settings: Settings) -> FrameProcessor:
    """A new TTS service for one call (a cloud engine comes with a Piper fallback)."""
    factory = _lookup(TTS_ENGINES, settings.tts_engine, "TTS engine")
    if settings.tts_engine == LOCAL_TTS:
        return factory(settings)
    return with_fallback(
        settings.tts_engine,
        EngineKind.TTS,
        settings,
        lambda: factory(settings),
        lambda: _piper(settings),
    )


def build_responder(
    settings: Settings, agent: AgentConfig
) -> ScriptedResponder | ResilientResponder:
    """A new responder for one call: the scripted agent, or an LLM with the scripted agent as fallback."""
    factory = _lookup(RESPONDERS, settings.responder, "responder")
    scripted = ScriptedResponder(IntentMatcher(agent))
    if settings.responder == LOCAL_RESPONDER:
        return scripted
    responder = with_fallback(
        settings.responder,
        EngineKind.LLM,
        settings,
        lambda: factory(settings, agent),
        lambda: scripted,
        switcher_type=ResilientResponder,
    )
    assert isinstance(responder, ScriptedResponder | ResilientResponder)
    return responder
