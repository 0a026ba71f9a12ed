"""Pipecat segmented STT over the shared Whisper engine, with speculative transcription.

A segmented STT transcribes when the VAD reports the stop, ``stop_secs`` after the caller's
speech ended; Whisper then adds its own time to every turn. With a speech-energy gate, the
service instead starts transcribing as soon as the caller's energy has been gone for
``speculate_after_secs`` and, if nothing was said in between, hands that transcript on at the
VAD stop: the stop window and Whisper overlap. If the caller goes on, the guess is dropped
(cancelled if Whisper had not started it yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import numpy as np
from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, InputAudioRawFrame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from switchboard.engines.whisper import SAMPLE_RATE, Transcript, WhisperEngine, shared_whisper
from switchboard.observability import metrics
from switchboard.speech_end import SpeechEnergyGate

# Whisper invents words for breaths and line noise; such segments come with a high no-speech score.
_NO_SPEECH_THRESHOLD = 0.6


class LocalWhisperSTTService(SegmentedSTTService):
    """Transcribes each VAD segment with Whisper tiny.en, off the event loop."""

    def __init__(
        self,
        *,
        engine: WhisperEngine | None = None,
        gate: SpeechEnergyGate | None = None,
        speculate_after_secs: float | None = None,
        **kwargs,
    ):
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
        self._gate = gate if speculate_after_secs is not None else None
        self._speculate_after = speculate_after_secs or 0.0
        self._guess_audio: bytes | None = None
        self._guess: asyncio.Future[Transcript] | None = None

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        await super().process_audio_frame(frame, direction)
        gate = self._gate
        if gate is None or not self._user_speaking:
            return
        if gate.speech:
            self._drop_guess()
        elif self._guess is None and gate.silent_s >= self._speculate_after:
            self._guess_audio = bytes(self._audio_buffer) + self._trailing_silence()
            self._guess = asyncio.ensure_future(self._engine.transcribe_async(_floats(self._guess_audio)))

    async def _handle_user_stopped_speaking(self, frame):
        guess_audio = self._guess_audio if self._guess is not None else None
        await super()._handle_user_stopped_speaking(frame)
        if guess_audio is not None:
            # The segment queued is the whole buffer; what was guessed on is a prefix of it
            # followed only by silence, so the guess stands for it.
            try:
                queued = self._segment_queue.get_nowait()
            except asyncio.QueueEmpty:  # the service could not take the segment
                self._drop_guess()
                return
            self._guess_audio = guess_audio if queued else None
            self._segment_queue.put_nowait(guess_audio if queued else queued)

    def _drop_guess(self) -> None:
        if self._guess is not None:
            self._guess.cancel()
            metrics.STT_SPECULATIONS.labels(result="dropped").inc()
        self._guess, self._guess_audio = None, None

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await self.start_processing_metrics()
        try:
            if self._guess is not None and audio is self._guess_audio:
                guess, self._guess, self._guess_audio = self._guess, None, None
                metrics.STT_SPECULATIONS.labels(result="used").inc()
                transcript = await guess
            else:
                transcript = await self._engine.transcribe_async(_floats(audio))
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


def _floats(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
