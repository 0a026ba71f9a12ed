"""Twilio Media Streams: TwiML, request signatures, the stream handshake and the serializer."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, WebSocket
from loguru import logger
from pipecat.audio.utils import ulaw_to_pcm
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    OutputTransportMessageFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pydantic import SecretStr
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

from switchboard.audio import TELEPHONY_FRAME_BYTES, TELEPHONY_RATE, TelephonyUpsampler, ulaw_decode
from switchboard.call_ids import call_id_for_twilio
from switchboard.engines.line_audio import LineAudioFrame
from switchboard.observability import metrics
from switchboard.telephony.media_socket import (
    CLOSE_HANDED_OFF,
    CLOSE_POLICY_VIOLATION,
    MediaRejected,
    MediaSocketGuard,
    decode_json,
)

VOICE_PATH = "/twilio/voice"  # the voice webhook, wherever it is answered
RESUME_PATH = "/twilio/resume"  # the voice webhook of a call placed again (a lost stream, a transfer nobody answered)
_DTMF_DIGITS = set("0123456789*#")


def connect_stream_twiml(
    stream_url: str, parameters: dict[str, str] | None = None, *, resume_url: str | None = None
) -> str:
    """TwiML that bridges the call to our media WebSocket. When the socket closes Twilio goes on
    to the next verb: ``<Redirect>`` to ``resume_url`` (which hangs up a call that ended, and
    places one whose worker was lost on another), else ``<Hangup/>``."""
    response = VoiceResponse()
    connect = Connect()
    stream = Stream(url=stream_url)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    connect.append(stream)
    response.append(connect)
    if resume_url:
        response.redirect(resume_url, method="POST")
    else:
        response.hangup()
    return str(response)


def hangup_twiml() -> str:
    response = VoiceResponse()
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


def webhook_call_id(form: dict[str, str]) -> tuple[str, str]:
    """A live call's webhook: its ``CallSid`` and Switchboard's call id; 400 without one."""
    call_sid = form.get("CallSid")
    if not call_sid:
        raise HTTPException(400, "CallSid is missing")
    return call_sid, call_id_for_twilio(call_sid)


def websocket_is_signed(
    websocket: WebSocket, public_url: str | None, auth_token: SecretStr | None, path: str
) -> bool:
    """Whether a media stream's handshake carries Twilio's signature of its public URL (``path``
    under the base the caller reached); always True when no auth token is configured."""
    if auth_token is None:
        return True
    url = websocket_url(public_base(websocket, public_url), path)
    return signature_is_valid(
        auth_token.get_secret_value(), url, {}, websocket.headers.get("X-Twilio-Signature")
    )


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


def _twilio_message(text: str) -> dict[str, Any]:
    """A Twilio message's JSON object; anything else is ``MediaRejected``."""
    message = decode_json(text)
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise MediaRejected(
            "bad_message", CLOSE_POLICY_VIOLATION, "not a Twilio message (no event field)"
        )
    return message


def parse_start(message: dict[str, Any]) -> StreamStart:
    """Twilio's ``start`` message, checked: the one reading of it, at the edge and the worker."""
    start = message.get("start")
    if not isinstance(start, dict):
        raise MediaRejected(
            "bad_message", CLOSE_POLICY_VIOLATION, "start message without a start object"
        )
    stream_sid = message.get("streamSid") or start.get("streamSid")
    parameters = start.get("customParameters") or {}
    if not isinstance(stream_sid, str) or not stream_sid:
        raise MediaRejected(
            "bad_message", CLOSE_POLICY_VIOLATION, "start message without streamSid"
        )
    if not isinstance(parameters, dict):
        raise MediaRejected(
            "bad_message", CLOSE_POLICY_VIOLATION, "start.customParameters is not an object"
        )
    return StreamStart(
        stream_sid=stream_sid,
        call_sid=str(start.get("callSid", "")),
        account_sid=str(start.get("accountSid", "")),
        custom_parameters={str(k): str(v) for k, v in parameters.items()},
    )


async def read_stream_start(socket: MediaSocketGuard) -> StreamStart | None:
    """Read ``connected`` then ``start``; None (the socket closed, the case counted) otherwise.

    Anything else before ``start``, or no ``start`` within the limit, closes the socket.
    """

    async def _read() -> StreamStart | None:
        connected = False
        while True:
            text = await socket.receive_text()
            if text is None:
                if socket.closed_with is None:
                    metrics.MEDIA_REJECTED.labels(
                        transport=socket.transport, reason="left_before_start"
                    ).inc()
                    logger.info("twilio media socket: the peer left before sending start")
                return None
            message = _twilio_message(text)
            if message["event"] == "connected" and not connected:
                connected = True
                continue
            if message["event"] != "start":
                raise MediaRejected(
                    "out_of_order", CLOSE_POLICY_VIOLATION, f"{message['event']!r} before start"
                )
            return parse_start(message)

    limit = socket.limits.start_timeout_secs
    try:
        return await asyncio.wait_for(_read(), limit)
    except MediaRejected as e:
        await socket.reject(e)
    except TimeoutError:
        await socket.reject(
            MediaRejected("start_timeout", CLOSE_POLICY_VIOLATION, f"no start within {limit:g} s")
        )
    return None


class PlaybackMark(OutputTransportMessageFrame):
    """A Twilio ``mark`` queued behind the audio of one finished utterance."""


class SwitchboardTwilioSerializer(TwilioFrameSerializer):
    """Pipecat's Twilio serializer, strict about its input and speaking marks.

    A message that is not Twilio's (bad JSON, wrong types, ``start`` again, media after
    ``stop``) closes the stream through its ``MediaSocketGuard`` with 1007/1008; an event we
    do not know, or a key press without a valid digit, is counted and ignored (Twilio may add
    events; a caller can press a key again). ``mark`` echoes are logged so
    we know when the caller actually heard an utterance.
    """

    def __init__(
        self, *args, socket: MediaSocketGuard | None = None, input_frame_ms: int = 20, **kwargs
    ):
        """``socket``: the guarded stream this serializer reads (its input limits close it on a
        message that is not Twilio's); without one such a message is counted and dropped."""
        super().__init__(*args, **kwargs)
        self._socket = socket
        self._stopped = False
        self.marks_played: list[str] = []
        # Twilio sends 20 ms frames; every frame costs a hop through each processor of the
        # pipeline, so audio is handed on in ``input_frame_ms`` chunks (VAD reads 32 ms anyway).
        self._chunk_bytes = TELEPHONY_FRAME_BYTES * max(1, input_frame_ms // 20)
        self._pending_audio = bytearray()
        self._upsampler = TelephonyUpsampler()
        self._handed_off = False

    @property
    def handed_off(self) -> bool:
        """Set once the call was transferred: Twilio runs it elsewhere, so the end of our pipeline
        must not hang it up, and the stream closes as handed off (not as a finished call)."""
        return self._handed_off

    @handed_off.setter
    def handed_off(self, value: bool) -> None:
        self._handed_off = value
        if value and self._socket is not None:
            self._socket.end_code = CLOSE_HANDED_OFF

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if self.handed_off and isinstance(frame, EndFrame | CancelFrame):
            return None
        if isinstance(frame, PlaybackMark):
            return json.dumps(
                {"event": "mark", "streamSid": self._stream_sid, "mark": frame.message}
            )
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            return await self._deserialize(data)
        except MediaRejected as e:
            if self._socket is None:
                metrics.BAD_MESSAGES.labels(provider="twilio").inc()
                logger.warning(f"twilio: dropping a message: {e}")
            else:
                await self._socket.reject(e)
            return None

    async def _deserialize(self, data: str | bytes) -> Frame | None:
        message = _twilio_message(data if isinstance(data, str) else data.decode(errors="replace"))
        event = message["event"]
        if event in ("connected", "start") or (self._stopped and event in ("media", "dtmf")):
            raise MediaRejected("out_of_order", CLOSE_POLICY_VIOLATION, f"{event!r} after start")
        if event == "stop":
            self._stopped = True
            return None
        body = message.get(event)
        if event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                raise MediaRejected("bad_message", CLOSE_POLICY_VIOLATION, "mark without a name")
            self.marks_played.append(name)
            logger.debug(f"twilio: caller heard up to mark {name}")
            return None
        if event == "dtmf":
            # A key press we cannot read costs that key, not the call (the caller can press
            # it again): counted and dropped, unlike a message that is not Twilio's at all.
            if not (isinstance(body, dict) and body.get("digit") in _DTMF_DIGITS):
                metrics.BAD_MESSAGES.labels(provider="twilio").inc()
                logger.warning("twilio: dropping a dtmf event without a valid digit")
                return None
            return await super().deserialize(data)
        if event != "media":
            metrics.BAD_MESSAGES.labels(provider="twilio").inc()
            logger.debug(f"twilio: ignoring unknown event {event[:40]!r}")
            return None
        if not (isinstance(body, dict) and isinstance(body.get("payload"), str)):
            raise MediaRejected("bad_message", CLOSE_POLICY_VIOLATION, "media without a payload")
        try:
            self._pending_audio += base64.b64decode(body["payload"], validate=True)
        except (binascii.Error, ValueError):
            raise MediaRejected(
                "bad_message", CLOSE_POLICY_VIOLATION, "media payload is not base64"
            ) from None
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
        # The line's µ-law rides along: an STT that takes µ-law gets the bytes as they came.
        return LineAudioFrame(audio=pcm, num_channels=1, sample_rate=self._sample_rate, ulaw=chunk)


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
