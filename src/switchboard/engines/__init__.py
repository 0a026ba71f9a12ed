"""STT and TTS engines, chosen by name from one registry.

Adding an engine means adding a module and one entry in ``STT_ENGINES`` or ``TTS_ENGINES``.
"""

from __future__ import annotations

from collections.abc import Callable

from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from switchboard.errors import EngineError
from switchboard.settings import Settings


def _whisper(settings: Settings) -> STTService:
    from switchboard.engines.whisper import shared_whisper
    from switchboard.engines.whisper_stt import LocalWhisperSTTService

    engine = shared_whisper(settings.inference_threads, settings.whisper_full_window)
    return LocalWhisperSTTService(engine=engine)


def _piper(settings: Settings) -> TTSService:
    from switchboard.engines.piper_tts import LocalPiperTTSService, shared_piper

    return LocalPiperTTSService(engine=shared_piper(settings.inference_threads))


STT_ENGINES: dict[str, Callable[[Settings], STTService]] = {"whisper": _whisper}
TTS_ENGINES: dict[str, Callable[[Settings], TTSService]] = {"piper": _piper}


def build_stt(settings: Settings) -> STTService:
    """A new STT service for one call."""
    try:
        factory = STT_ENGINES[settings.stt_engine]
    except KeyError:
        raise EngineError(
            f"unknown STT engine {settings.stt_engine!r}; choose one of {sorted(STT_ENGINES)}"
        ) from None
    return factory(settings)


def build_tts(settings: Settings) -> TTSService:
    """A new TTS service for one call."""
    try:
        factory = TTS_ENGINES[settings.tts_engine]
    except KeyError:
        raise EngineError(
            f"unknown TTS engine {settings.tts_engine!r}; choose one of {sorted(TTS_ENGINES)}"
        ) from None
    return factory(settings)
