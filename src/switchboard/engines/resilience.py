"""Cloud providers with a local fallback: a circuit breaker per provider and a per-call switcher.

Two levels, so that a provider outage costs at most one turn of one call:

* **Per call**, :class:`FallbackSwitcher` (a :class:`~switchboard.engines.service_pair.ServicePair`)
  runs the provider's service and keeps the local engine (Whisper, Piper, the scripted
  responder) beside it, idle.
  The first error the provider's service reports, or a response slower than
  ``provider_response_timeout_secs``, moves the call to the local engine for the rest of the
  call; what was in flight (the turn's LLM context, the reply text not yet spoken, the caller's
  utterance not yet transcribed) is replayed to it so the caller still gets an answer.
* **Per process**, one :class:`CircuitBreaker` per provider counts consecutive failures over
  all calls. Once ``breaker_failure_threshold`` is reached it opens: new calls are built with
  the local engine alone, skipping the connect attempt, until ``breaker_reset_secs`` have
  passed; then one call tries the provider again (half-open) and its outcome closes or re-opens
  the breaker.

Every failure counts in ``ENGINE_ERRORS{engine=<provider>}`` and every call moved off a
provider (mid-call, or at build time by an open breaker) in ``PROVIDER_FALLBACKS{provider}``.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable

from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.stt_service import STTService

from switchboard.engines.service_pair import ServicePair
from switchboard.engines.utterance_buffer import UtteranceBuffer
from switchboard.observability import metrics
from switchboard.settings import Settings


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure breaker for one provider, shared by every call in the process."""

    def __init__(
        self,
        provider: str,
        *,
        failure_threshold: int,
        reset_secs: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.provider = provider
        self.failure_threshold = failure_threshold
        self.reset_secs = reset_secs
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._trial_started_at = 0.0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_secs:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
        return self._state

    def allow(self) -> bool:
        """Whether a new call may use the provider (half-open lets exactly one call try)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        # A trial call that ended without a verdict (no request made) must not block the
        # provider forever: after another reset period, the next call is the trial.
        trial_stale = self._clock() - self._trial_started_at >= self.reset_secs
        if state is BreakerState.HALF_OPEN and (not self._trial_in_flight or trial_stale):
            self._trial_in_flight = True
            self._trial_started_at = self._clock()
            return True
        return False

    def record_success(self) -> None:
        if self._state is not BreakerState.CLOSED:
            logger.info(f"provider {self.provider}: breaker closed, provider answering again")
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial_in_flight = False

    def record_failure(self, reason: str) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._trial_in_flight = False
            logger.warning(
                f"provider {self.provider}: breaker open for {self.reset_secs:g} s after "
                f"{self._failures} consecutive failures (last: {reason})"
            )


_BREAKERS: dict[str, CircuitBreaker] = {}


def breaker_for(provider: str, settings: Settings) -> CircuitBreaker:
    """The process's breaker for ``provider``, created on first use."""
    breaker = _BREAKERS.get(provider)
    if breaker is None:
        breaker = CircuitBreaker(
            provider,
            failure_threshold=settings.breaker_failure_threshold,
            reset_secs=settings.breaker_reset_secs,
        )
        _BREAKERS[provider] = breaker
    return breaker


def reset_breakers() -> None:
    """Forget every breaker (tests, or an operator who knows the provider is back)."""
    _BREAKERS.clear()


class EngineKind(enum.StrEnum):
    STT = "stt"
    TTS = "tts"
    LLM = "llm"


class FallbackSwitcher(ServicePair):
    """A provider's service with a local fallback, switched on error or on a slow response.

    What counts as "waiting on the provider" depends on the kind: an LLM owes its first text
    after a context, a TTS its first audio after text. (STT services time their own final
    transcripts, since an empty final produces no frame to watch for here.)
    """

    def __init__(
        self,
        primary: FrameProcessor,
        fallback: FrameProcessor,
        *,
        provider: str,
        kind: EngineKind,
        breaker: CircuitBreaker,
        response_timeout_secs: float,
    ):
        super().__init__(primary, fallback)
        self._provider = provider
        self._kind = kind
        self._breaker = breaker
        self._response_timeout_secs = response_timeout_secs
        self._watchdog: asyncio.Task | None = None
        self._pending_context: LLMContextFrame | None = None
        self._pending_text: list[str] = []
        self._pending_speech = UtteranceBuffer() if kind is EngineKind.STT else None

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def kind(self) -> EngineKind:
        return self._kind

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if direction is FrameDirection.DOWNSTREAM and self.on_primary:
            await self._note_request(frame)
        await super().process_frame(frame, direction)

    async def service_output(self, frame: Frame, direction: FrameDirection) -> bool:
        if isinstance(frame, ErrorFrame) and not frame.fatal and frame.processor is self._primary:
            await self._on_primary_failure(f"error: {frame.error}")
            return True
        if direction is FrameDirection.DOWNSTREAM and self.on_primary:
            await self._note_response(frame)
        return False

    async def hear_audio(self, frame: InputAudioRawFrame) -> None:
        """Caller audio handed straight to the active STT service, past the pair's queue (the
        call's media stage, media_stage=lean); kept for a replay as if it had come through."""
        if self._pending_speech is not None and self.on_primary:
            self._pending_speech.sent(frame)
        service = self.active_service
        if isinstance(service, STTService):
            await service.process_audio_frame(frame, FrameDirection.DOWNSTREAM)

    async def _note_request(self, frame: Frame) -> None:
        if self._pending_speech is not None:
            self._pending_speech.sent(frame)
            return
        if isinstance(frame, StartFrame):
            return
        if isinstance(frame, InterruptionFrame):
            self._pending_text.clear()
            self._pending_context = None
            await self._stop_watchdog()
        elif (
            self._kind is EngineKind.LLM
            and isinstance(frame, LLMContextFrame)
            and not frame.speculation
        ):
            self._pending_context = frame
            self._start_watchdog("first token")
        elif (
            self._kind is EngineKind.TTS
            and isinstance(frame, (TTSSpeakFrame, LLMTextFrame))
            and frame.text.strip()
        ):
            # LLM tokens carry their own spacing; whole utterances (TTSSpeakFrame) do not.
            self._pending_text.append(
                frame.text if isinstance(frame, LLMTextFrame) else f" {frame.text} "
            )
            if self._watchdog is None:
                self._start_watchdog("first audio")

    async def _note_response(self, frame: Frame) -> None:
        if self._kind is EngineKind.LLM and isinstance(frame, LLMTextFrame):
            await self._answered()
        elif self._kind is EngineKind.LLM and isinstance(frame, LLMFullResponseEndFrame):
            self._pending_context = None
        elif self._kind is EngineKind.TTS and isinstance(frame, TTSAudioRawFrame):
            await self._answered()
        elif self._kind is EngineKind.TTS and isinstance(frame, TTSStoppedFrame):
            # The context is done, even if its last words made no audio of their own.
            self._pending_text.clear()
            await self._stop_watchdog()
        elif self._kind is EngineKind.STT and isinstance(frame, TranscriptionFrame):
            self._breaker.record_success()
            if self._pending_speech is not None:
                self._pending_speech.answered(frame)

    async def _answered(self) -> None:
        if self._watchdog is not None:
            await self._stop_watchdog()
            self._breaker.record_success()

    def _start_watchdog(self, what: str) -> None:
        if self._watchdog is None:
            self._watchdog = self.create_task(self._expire(what), f"{self}::watchdog")

    async def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not asyncio.current_task():
            await self.cancel_task(watchdog)

    async def _expire(self, what: str) -> None:
        await asyncio.sleep(self._response_timeout_secs)
        self._watchdog = None
        await self._on_primary_failure(f"no {what} within {self._response_timeout_secs:g} s")

    async def _on_primary_failure(self, reason: str) -> None:
        metrics.ENGINE_ERRORS.labels(engine=self._provider).inc()
        if not self.on_primary:
            return  # a late complaint from a provider this call already left
        self._breaker.record_failure(reason)
        await self._stop_watchdog()
        if not await self.switch_to_fallback():
            logger.error(f"{self}: {self._provider} failed ({reason}) and the fallback is unusable")
            return
        metrics.PROVIDER_FALLBACKS.labels(provider=self._provider).inc()
        logger.warning(
            f"{self}: {self._provider} failed ({reason}); call continues on {self._fallback}"
        )
        await self._replay()

    async def _replay(self) -> None:
        """Hand what the provider was working on to the fallback, so the turn still gets a reply."""
        if self._pending_context is not None:
            context, self._pending_context = self._pending_context, None
            await self._fallback.queue_frame(context)
        if self._pending_text:
            text = " ".join("".join(self._pending_text).split())
            self._pending_text.clear()
            await self._fallback.queue_frame(TTSSpeakFrame(text))
        if self._pending_speech is not None:
            for frame in self._pending_speech.take():
                await self._fallback.queue_frame(frame)

    async def cleanup(self):
        await self._stop_watchdog()
        await super().cleanup()


class ResilientResponder(FallbackSwitcher):
    """An LLM responder with the scripted responder as its fallback."""

    @property
    def matches(self) -> list:
        """Intents the scripted fallback matched (empty while the LLM answers)."""
        return getattr(self._fallback, "matches", [])


def with_fallback(
    provider: str,
    kind: EngineKind,
    settings: Settings,
    primary: Callable[[], FrameProcessor],
    fallback: Callable[[], FrameProcessor],
    switcher_type: type[FallbackSwitcher] = FallbackSwitcher,
) -> FrameProcessor:
    """One call's service for ``provider``: switcher over primary and fallback, or the fallback
    alone while the provider's breaker is open."""
    breaker = breaker_for(provider, settings)
    if not breaker.allow():
        metrics.PROVIDER_FALLBACKS.labels(provider=provider).inc()
        logger.info(
            f"provider {provider}: breaker {breaker.state}, call uses the local {kind} engine"
        )
        return fallback()
    return switcher_type(
        primary(),
        fallback(),
        provider=provider,
        kind=kind,
        breaker=breaker,
        response_timeout_secs=settings.provider_response_timeout_secs,
    )
