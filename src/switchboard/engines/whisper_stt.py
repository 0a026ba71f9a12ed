"""Pipecat segmented STT over the shared Whisper engine."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import numpy as np
from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from switchboard.engines.whisper import SAMPLE_RATE, WhisperEngine, shared_whisper
from switchboard.observability import metrics

# Whisper invents words for breaths and line noise; such segments come with a high no-speech score.
_NO_SPEECH_THRESHOLD = 0.6


class LocalWhisperSTTService(SegmentedSTTService):
    """Transcribes each VAD segment with Whisper tiny.en, off the event loop."""

    def __init__(self, *, engine: WhisperEngine | None = None, **kwargs):
        # A short tail of silence lets Whisper finish the last word; 0.5 s (the default)
        # would lengthen every encode for nothing since the window already has a margin.
        super().__init__(
            sample_rate=SAMPLE_RATE,
            trailing_silence_secs=0.1,
            # Measured p99 from VAD stop to transcript on 2 cores; bounds the turn's wait for text.
            ttfs_p99_latency=0.5,
            settings=STTSettings(model="tiny.en", language=Language.EN),
            **kwargs,
        )
        self._engine = engine or shared_whisper()

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await self.start_processing_metrics()
        try:
            samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
            transcript = await self._engine.transcribe_async(samples)
        except Exception as e:  # one failed segment must not end the call
            logger.exception(f"{self}: transcription failed")
            metrics.ENGINE_ERRORS.labels(engine="whisper").inc()
            yield ErrorFrame(error=f"Whisper transcription failed: {e}")
            return
        finally:
            await self.stop_processing_metrics()
        if transcript.text and transcript.no_speech_prob < _NO_SPEECH_THRESHOLD:
            logger.debug(f"{self}: transcript [{transcript.text}]")
            yield TranscriptionFrame(transcript.text, self._user_id, time_now_iso8601(), Language.EN)
