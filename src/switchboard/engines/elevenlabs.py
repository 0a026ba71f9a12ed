"""ElevenLabs streaming TTS (Pipecat's ``ElevenLabsTTSService``, multi-stream-input WebSocket)."""

from __future__ import annotations

import logging

from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

from switchboard.engines.shared_clients import tls_context
from switchboard.errors import EngineError
from switchboard.settings import Settings

# websockets logs every handshake header at DEBUG, and ElevenLabs' key is a header
# (``xi-api-key``) that it does not redact: the connection gets a logger that stays at INFO.
_WS_LOGGER = logging.getLogger("switchboard.engines.elevenlabs.websocket")
_WS_LOGGER.setLevel(logging.INFO)


class SwitchboardElevenLabsTTSService(ElevenLabsTTSService):
    """ElevenLabs with a bounded WebSocket handshake (the websockets default waits 10 s), a
    connection logger that cannot print the API key, and the process's TLS context (websockets
    would build a fresh one, CA store and all, for every call's ``wss://`` connection)."""

    def __init__(self, *, connect_timeout_secs: float, **kwargs):
        super().__init__(**kwargs)
        self._connect_timeout_secs = connect_timeout_secs

    async def _websocket_connect(self, uri: str, **kwargs):
        kwargs.setdefault("open_timeout", self._connect_timeout_secs)
        kwargs.setdefault("logger", _WS_LOGGER)
        if uri.startswith("wss://"):
            kwargs.setdefault("ssl", tls_context())
        return await super()._websocket_connect(uri, **kwargs)


def build_elevenlabs_tts(settings: Settings) -> SwitchboardElevenLabsTTSService:
    """An ElevenLabs TTS service for one call.

    ``sample_rate`` is left to the pipeline's output rate, so the service asks ElevenLabs for
    ``pcm_<call rate>`` (``pcm_8000`` on a Twilio call): audio arrives at the call's rate and
    only the µ-law companding (no resampling) is left to the serializer. One WebSocket per
    call, opened while the call is set up and reused for every turn (one context per reply).
    """
    if settings.elevenlabs_api_key is None:
        raise EngineError("TTS engine 'elevenlabs' needs ELEVENLABS_API_KEY")
    return SwitchboardElevenLabsTTSService(
        api_key=settings.elevenlabs_api_key.get_secret_value(),
        url=settings.elevenlabs_url,
        settings=ElevenLabsTTSService.Settings(
            voice=settings.elevenlabs_voice_id, model=settings.elevenlabs_model
        ),
        connect_timeout_secs=settings.provider_connect_timeout_secs,
    )
