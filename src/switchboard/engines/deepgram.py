"""Deepgram live STT (Pipecat's ``DeepgramSTTService``) with telephony settings and bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import httpx
import pipecat.services.deepgram.stt as pipecat_deepgram
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from loguru import logger
from pipecat.audio.utils import create_stream_resampler, pcm_to_ulaw
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    StartFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.transcriptions.language import Language

from switchboard.audio import TELEPHONY_RATE
from switchboard.engines.line_audio import LineAudioFrame
from switchboard.engines.shared_clients import shared_client, tls_context
from switchboard.errors import EngineError
from switchboard.settings import Settings

# The SDK's client holds an HTTP pool for Deepgram's REST API, which live STT (a WebSocket)
# never uses: a generous timeout, since nothing waits on it.
_REST_TIMEOUT_SECS = 60.0
_SWAP_LOCK = threading.Lock()


def shared_deepgram_client(api_key: str, base_url: str) -> AsyncDeepgramClient:
    """The process's Deepgram SDK client for this endpoint and key.

    It keeps no connection and no event-loop state (each call's stream is a WebSocket of its
    own), so one serves every call and thread; its unused HTTP pool is closed on shutdown.
    """

    def build() -> tuple[AsyncDeepgramClient, httpx.AsyncClient]:
        http = httpx.AsyncClient(timeout=_REST_TIMEOUT_SECS, verify=tls_context())
        scheme, _, host = base_url.rpartition("://")
        secure = scheme not in ("ws", "http")
        ws_url, http_url = f"{'wss' if secure else 'ws'}://{host}", f"{'https' if secure else 'http'}://{host}"
        environment = DeepgramClientEnvironment(
            base=http_url, production=ws_url, agent=ws_url, agent_rest=http_url
        )
        return AsyncDeepgramClient(api_key=api_key, environment=environment, httpx_client=http), http

    async def close(pair: tuple[AsyncDeepgramClient, httpx.AsyncClient]) -> None:
        await pair[1].aclose()

    return shared_client(("deepgram", base_url, api_key), build, close)[0]


@contextlib.contextmanager
def _pipecat_uses(client: AsyncDeepgramClient) -> Iterator[None]:
    """While Pipecat's service is constructed, its ``AsyncDeepgramClient(...)`` is ``client``.

    ``DeepgramSTTService.__init__`` builds an SDK client of its own, and with it an HTTP pool
    and a TLS context (the certifi bundle parsed), for every call; it takes no client to use
    instead. The lock keeps two threads (start-up warm-up, the event loop) from swapping at once.
    """
    with _SWAP_LOCK:
        original = pipecat_deepgram.AsyncDeepgramClient
        pipecat_deepgram.AsyncDeepgramClient = lambda **_: client  # type: ignore[assignment,misc]
        try:
            yield
        finally:
            pipecat_deepgram.AsyncDeepgramClient = original  # type: ignore[misc]


class SwitchboardDeepgramSTTService(DeepgramSTTService):
    """Deepgram that never holds a call up, fed the caller's audio in chunks and, on a phone
    line, in the line's own µ-law.

    Pipecat's service waits for its connection loop to connect or give up (several attempts,
    4 s backoff) before the call may start, and nothing bounds a final transcript that never
    comes. Here both are capped; running past a cap is reported as an error, which the
    call's :class:`~switchboard.engines.resilience.FallbackSwitcher` answers by moving to the
    local engine. Pipecat's own reconnect loop (with backoff) keeps running meanwhile.

    Audio goes up ``chunk_ms`` at a time (one WebSocket message per chunk, not per frame; Deepgram
    takes 20-100 ms chunks) and whatever is held is sent before each ``Finalize``, so the final
    transcript waits for nothing. With ``line_mulaw``, a call on an 8 kHz phone line (Twilio)
    streams ``encoding=mulaw&sample_rate=8000``: the line's bytes as they came (a
    :class:`~switchboard.engines.line_audio.LineAudioFrame`), a quarter of the 16 kHz PCM.
    """

    def __init__(
        self,
        *,
        client: AsyncDeepgramClient,
        connect_timeout_secs: float,
        final_timeout_secs: float,
        chunk_ms: int,
        line_mulaw: bool,
        **kwargs,
    ):
        with _pipecat_uses(client):
            super().__init__(**kwargs)
        self._connect_timeout_secs = connect_timeout_secs
        self._final_timeout_secs = final_timeout_secs
        self._final_watchdog: asyncio.Task | None = None
        self._chunk_ms = chunk_ms
        self._mulaw_on_phone_lines = line_mulaw
        self._line_mulaw = False  # decided at setup, from the call's line rate
        self._unsent = bytearray()
        self._frame: InputAudioRawFrame | None = None
        self._ulaw_resampler = None

    @property
    def wire_encoding(self) -> str:
        """What the stream carries: ``mulaw`` (8 kHz, a phone line's) or ``linear16``."""
        return "mulaw" if self._line_mulaw else "linear16"

    async def setup(self, setup: FrameProcessorSetup):
        # Before super().setup() connects: the stream's query string names its encoding.
        self._line_mulaw = (
            self._mulaw_on_phone_lines and setup.audio_out_sample_rate == TELEPHONY_RATE
        )
        await super().setup(setup)

    def _build_connect_kwargs(self) -> dict:
        kwargs = super()._build_connect_kwargs()
        if self._line_mulaw:
            kwargs.update(encoding="mulaw", sample_rate=str(TELEPHONY_RATE))
        return kwargs

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        self._frame = frame  # run_stt is handed the PCM only; the line's µ-law rides on the frame
        await super().process_audio_frame(frame, direction)

    async def run_stt(self, audio: bytes):
        self._unsent += await self._wire_bytes(audio)
        bytes_per_ms = 8 if self._line_mulaw else self.sample_rate // 500
        if len(self._unsent) >= self._chunk_ms * bytes_per_ms:
            await self._send_unsent()
        yield None

    async def _wire_bytes(self, audio: bytes) -> bytes:
        if not self._line_mulaw:
            return audio
        frame = self._frame
        if isinstance(frame, LineAudioFrame) and frame.audio is audio:
            ulaw = frame.line_ulaw()
            if ulaw is not None:
                return ulaw
        # Audio a processor changed (the noise filter): back down to the line's format.
        if self._ulaw_resampler is None:
            self._ulaw_resampler = create_stream_resampler()
        return await pcm_to_ulaw(audio, self.sample_rate, TELEPHONY_RATE, self._ulaw_resampler)

    async def _send_unsent(self) -> None:
        if not self._unsent:
            return
        data = bytes(self._unsent)
        self._unsent.clear()
        if self._connection is None:
            return  # not connected: Pipecat's reconnect loop is at it; this audio is lost as before
        try:
            await self._connection.send_media(data)
        except Exception as e:  # the SDK raises whatever its socket does; Pipecat's reconnects
            logger.warning(f"{self}: send_media failed, connection will reconnect: {e}")
            self._connection = None

    async def _connect(self):
        try:
            await asyncio.wait_for(super()._connect(), self._connect_timeout_secs)
        except TimeoutError:
            logger.warning(f"{self}: not connected within {self._connect_timeout_secs:g} s")

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._send_unsent()  # all of the utterance is up before Pipecat's Finalize
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

    The pipeline's audio is 16 kHz linear16 (a phone line's µ-law is decoded and upsampled once
    at the edge for VAD and smart-turn); on a phone line the line's µ-law goes up instead
    (``deepgram_line_mulaw``), elsewhere the pipeline's PCM, in ``deepgram_chunk_ms`` chunks.
    """
    if settings.deepgram_api_key is None:
        raise EngineError("STT engine 'deepgram' needs DEEPGRAM_API_KEY")
    api_key = settings.deepgram_api_key.get_secret_value()
    return SwitchboardDeepgramSTTService(
        client=shared_deepgram_client(api_key, settings.deepgram_url),
        api_key=api_key,
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
        chunk_ms=settings.deepgram_chunk_ms,
        line_mulaw=settings.deepgram_line_mulaw,
    )
