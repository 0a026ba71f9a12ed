"""Deepgram live STT (Pipecat's ``DeepgramSTTService``) with telephony settings and bounded waits."""

from __future__ import annotations

import asyncio

from loguru import logger
from pipecat.frames.frames import Frame, StartFrame, VADUserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.transcriptions.language import Language

from switchboard.errors import EngineError
from switchboard.settings import Settings


class SwitchboardDeepgramSTTService(DeepgramSTTService):
    """Deepgram that never holds a call up: connecting and each final transcript are timed.

    Pipecat's service waits for its connection loop to connect or give up (several attempts,
    4 s backoff) before the call may start, and nothing bounds a final transcript that never
    comes. Here both are capped; running past a cap is reported as an error, which the
    call's :class:`~switchboard.engines.resilience.FallbackSwitcher` answers by moving to the
    local engine. Pipecat's own reconnect loop (with backoff) keeps running meanwhile.
    """

    def __init__(self, *, connect_timeout_secs: float, final_timeout_secs: float, **kwargs):
        super().__init__(**kwargs)
        self._connect_timeout_secs = connect_timeout_secs
        self._final_timeout_secs = final_timeout_secs
        self._final_watchdog: asyncio.Task | None = None

    async def _connect(self):
        try:
            await asyncio.wait_for(super()._connect(), self._connect_timeout_secs)
        except TimeoutError:
            logger.warning(f"{self}: not connected within {self._connect_timeout_secs:g} s")

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._connection is None:
            await self.push_error(f"Deepgram not connected within {self._connect_timeout_secs:g} s")
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._connection is not None:
            # Finalize was just sent; Deepgram owes a final result (from_finalize), even if empty.
            await self._cancel_final_watchdog()
            self._final_watchdog = self.create_task(self._await_final(), f"{self}::final")

    async def _await_final(self) -> None:
        await asyncio.sleep(self._final_timeout_secs)
        self._final_watchdog = None
        await self.push_error(
            f"Deepgram sent no final result within {self._final_timeout_secs:g} s"
        )

    async def _cancel_final_watchdog(self) -> None:
        watchdog, self._final_watchdog = self._final_watchdog, None
        if watchdog is not None:
            await self.cancel_task(watchdog)

    async def _on_message(self, message):
        if getattr(message, "is_final", False):
            await self._cancel_final_watchdog()
        await super()._on_message(message)

    async def cleanup(self):
        await self._cancel_final_watchdog()
        await super().cleanup()


def build_deepgram_stt(settings: Settings) -> SwitchboardDeepgramSTTService:
    """A Deepgram STT service for one call.

    The pipeline's audio is already 16 kHz linear16 (Twilio's µ-law is decoded and upsampled
    once at the edge for VAD and smart-turn), so that is what goes up: no second conversion.
    """
    if settings.deepgram_api_key is None:
        raise EngineError("STT engine 'deepgram' needs DEEPGRAM_API_KEY")
    return SwitchboardDeepgramSTTService(
        api_key=settings.deepgram_api_key.get_secret_value(),
        base_url=settings.deepgram_url,
        encoding="linear16",
        settings=DeepgramSTTService.Settings(
            model=settings.deepgram_model,
            language=Language.EN_US,
            interim_results=True,
            endpointing=settings.deepgram_endpointing_ms,
            utterance_end_ms=settings.deepgram_utterance_end_ms,
            punctuate=True,
            smart_format=True,
            extra={"vad_events": True},
        ),
        connect_timeout_secs=settings.provider_connect_timeout_secs,
        final_timeout_secs=settings.provider_response_timeout_secs,
    )
