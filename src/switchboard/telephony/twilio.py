"""Twilio Media Streams: TwiML, request signatures, the stream handshake and the serializer."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, WebSocket
from loguru import logger
from pipecat.audio.utils import ulaw_to_pcm
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    OutputTransportMessageFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pydantic import SecretStr
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

from switchboard.audio import TELEPHONY_FRAME_BYTES, TELEPHONY_RATE, TelephonyUpsampler, ulaw_decode
from switchboard.errors import TelephonyError
from switchboard.observability import metrics

START_TIMEOUT_SECS = 10.0
_DTMF_DIGITS = set("0123456789*#")


def connect_stream_twiml(stream_url: str, parameters: dict[str, str] | None = None) -> str:
    """TwiML that bridges the call to our media WebSocket, then hangs up when it closes."""
    response = VoiceResponse()
    connect = Connect()
    stream = Stream(url=stream_url)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    connect.append(stream)
    response.append(connect)
    response.hangup()
    return str(response)


def busy_twiml(message: str) -> str:
    """TwiML that apologises and hangs up (no agent could take the call)."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


def public_base(request: Request | WebSocket, configured: str | None) -> str:
    """The base URL the caller used to reach us (a configured public URL wins)."""
    if configured:
        return configured.rstrip("/")
    scheme = request.url.scheme.replace("ws", "http")
    return f"{scheme}://{request.headers.get('host', request.url.netloc)}"


def websocket_url(base: str, path: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path}{path}"


async def verified_webhook_form(
    request: Request, public_url: str | None, auth_token: SecretStr | None
) -> tuple[dict[str, str], str]:
    """A voice webhook's form fields and the base URL it reached; 403 if a token is set and the
    request is not signed with it (the signed URL is the public one, query string included)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    base = public_base(request, public_url)
    if auth_token is not None:
        url = f"{base}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        if not signature_is_valid(auth_token.get_secret_value(), url, form, request.headers.get("X-Twilio-Signature")):
            metrics.WEBHOOKS.labels(provider="twilio", result="bad_signature").inc()
            raise HTTPException(status_code=403, detail="invalid X-Twilio-Signature")
    metrics.WEBHOOKS.labels(provider="twilio", result="accepted").inc()
    return form, base


def signature_is_valid(auth_token: str, url: str, params: dict[str, str], signature: str | None) -> bool:
    """Check ``X-Twilio-Signature`` with the twilio package's validator."""
    if not signature:
        return False
    return RequestValidator(auth_token).validate(url, params, signature)


@dataclass(frozen=True)
class StreamStart:
    """What Twilio's ``start`` message tells us about the call."""

    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)


async def read_stream_start(websocket: WebSocket, limit_secs: float = START_TIMEOUT_SECS) -> StreamStart:
    """Read messages until ``start``; ``connected`` and stray messages before it are skipped."""

    async def _read() -> StreamStart:
        while True:
            raw = await websocket.receive_text()
            try:
                message = json.loads(raw)
            except json.JSONDecodeError:
                metrics.BAD_MESSAGES.labels(provider="twilio").inc()
                logger.warning(f"twilio: ignoring non-JSON message before start: {raw[:80]!r}")
                continue
            if not isinstance(message, dict):
                metrics.BAD_MESSAGES.labels(provider="twilio").inc()
                continue
            if message.get("event") != "start":
                continue
            start = message.get("start") or {}
            stream_sid = message.get("streamSid") or start.get("streamSid")
            if not stream_sid or not isinstance(start, dict):
                raise TelephonyError("start message without streamSid")
            return StreamStart(
                stream_sid=stream_sid,
                call_sid=str(start.get("callSid", "")),
                account_sid=str(start.get("accountSid", "")),
                custom_parameters=dict(start.get("customParameters") or {}),
            )

    try:
        return await asyncio.wait_for(_read(), limit_secs)
    except TimeoutError as e:
        raise TelephonyError(f"no start message within {limit_secs:.0f} s") from e


class PlaybackMark(OutputTransportMessageFrame):
    """A Twilio ``mark`` queued behind the audio of one finished utterance."""


class SwitchboardTwilioSerializer(TwilioFrameSerializer):
    """Pipecat's Twilio serializer, hardened against bad input and speaking marks.

    A malformed message is counted and dropped instead of ending the receive loop, and
    ``mark`` echoes are logged so we know when the caller actually heard an utterance.
    """

    def __init__(self, *args, call_sid: str | None = None, input_frame_ms: int = 20, **kwargs):
        super().__init__(*args, call_sid=call_sid, **kwargs)
        self.marks_played: list[str] = []
        # Twilio sends 20 ms frames; every frame costs a hop through each processor of the
        # pipeline, so audio is handed on in ``input_frame_ms`` chunks (VAD reads 32 ms anyway).
        self._chunk_bytes = TELEPHONY_FRAME_BYTES * max(1, input_frame_ms // 20)
        self._pending_audio = bytearray()
        self._upsampler = TelephonyUpsampler()
        # Set once the call was transferred: Twilio runs it elsewhere, so the end of our
        # pipeline must not hang it up.
        self.handed_off = False

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if self.handed_off and isinstance(frame, EndFrame | CancelFrame):
            return None
        if isinstance(frame, PlaybackMark):
            return json.dumps({"event": "mark", "streamSid": self._stream_sid, "mark": frame.message})
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            message = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._bad(data, "not JSON")
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            return self._bad(data, "no event field")
        event = message["event"]
        if event == "mark":
            name = (message.get("mark") or {}).get("name")
            self.marks_played.append(str(name))
            logger.debug(f"twilio: caller heard up to mark {name}")
            return None
        if event in ("connected", "start", "stop"):
            return None
        if event not in ("media", "dtmf"):
            return self._bad(data, f"unknown event {event!r}")
        body = message.get(event)
        if event == "media" and not (isinstance(body, dict) and isinstance(body.get("payload"), str)):
            return self._bad(data, "media without a payload")
        if event == "dtmf" and not (isinstance(body, dict) and body.get("digit") in _DTMF_DIGITS):
            return self._bad(data, "dtmf without a valid digit")
        if event == "dtmf":
            return await super().deserialize(data)
        try:
            self._pending_audio += base64.b64decode(body["payload"], validate=True)
        except (binascii.Error, ValueError):
            return self._bad(data, "corrupt payload")
        if len(self._pending_audio) < self._chunk_bytes:
            return None
        chunk = bytes(self._pending_audio)
        self._pending_audio.clear()
        if self._sample_rate == 2 * TELEPHONY_RATE:
            pcm = self._upsampler.process(ulaw_decode(chunk)).tobytes()
        else:
            pcm = await ulaw_to_pcm(chunk, self._twilio_sample_rate, self._sample_rate, self._input_resampler)
        if not pcm:
            return None
        return InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._sample_rate)

    @staticmethod
    def _bad(data: str | bytes, why: str) -> None:
        metrics.BAD_MESSAGES.labels(provider="twilio").inc()
        logger.warning(f"twilio: dropping message ({why}): {str(data)[:80]!r}")
        return None


class PlaybackMarker(FrameProcessor):
    """Queues a Twilio mark after each utterance's audio, so Twilio reports when it was heard."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._count = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TTSStoppedFrame):
            self._count += 1
            await self.push_frame(PlaybackMark(message={"name": f"utterance-{self._count}"}))
