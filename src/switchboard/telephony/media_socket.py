"""Limits on a media WebSocket: message size, type and rate, enforced on every receive.

``MediaSocketGuard`` wraps an accepted Starlette WebSocket for the whole life of a media
stream: the handshake we read ourselves and the frames Pipecat's transport reads after it.
A message that breaks a limit closes the socket at once with the matching close code and is
counted in ``media_rejected_total``; the reader then sees an ordinary disconnect, so nothing
above it raises. Any ingress that carries telephony media over a WebSocket (the worker's
Twilio stream, an edge relay) wraps its socket in one.

The size cap is also uvicorn's ``ws_max_size`` (see ``http/serving.py``): the protocol layer then
refuses an oversized frame from its header, before reading or decoding the payload, and the
guard counts the 1009 it reports.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket
from loguru import logger
from starlette.types import Message
from starlette.websockets import WebSocketState

from switchboard.errors import TelephonyError
from switchboard.observability import metrics
from switchboard.settings import Settings

# RFC 6455 close codes.
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
# "Service restart": the call goes on elsewhere (another worker, or the carrier after a
# transfer), so the media edge leaves its session open for Twilio's <Redirect>.
CLOSE_HANDED_OFF = 1012
# Faults the protocol layer (uvicorn's websockets) closes a socket for itself, reported to the
# app as a disconnect with that code. A peer that sends such a code in its own close frame is
# counted alike; nothing legitimate does.
_PROTOCOL_CLOSES = {CLOSE_MESSAGE_TOO_BIG: "oversized", CLOSE_INVALID_PAYLOAD: "bad_utf8"}


@dataclass(frozen=True)
class MediaLimits:
    """What one media socket may send (``from_settings``: the production defaults)."""

    max_message_bytes: int
    messages_per_sec: float
    burst_messages: int
    start_timeout_secs: float

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        return cls(
            max_message_bytes=settings.media_max_message_bytes,
            messages_per_sec=settings.media_max_messages_per_sec,
            burst_messages=settings.media_message_burst,
            start_timeout_secs=settings.media_start_timeout_secs,
        )


class MediaRejected(TelephonyError):
    """A media message broke the protocol or a limit: close with ``code``, count ``reason``."""

    def __init__(self, reason: str, code: int, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.code = code


def decode_json(text: str) -> Any:
    """Parse one media message; malformed or too deeply nested JSON is ``MediaRejected`` (1007)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        detail = (
            "JSON nested too deeply" if isinstance(e, RecursionError) else f"not JSON ({e.msg})"
        )
        raise MediaRejected("bad_json", CLOSE_INVALID_PAYLOAD, detail) from None


class MediaSocketGuard:
    """An accepted WebSocket whose ``receive`` enforces ``MediaLimits``.

    It stands in for the Starlette WebSocket wherever one is expected (Pipecat's
    ``FastAPIWebsocketTransport`` reads ``receive()`` and writes ``send_text``); everything but
    receiving and closing is delegated unchanged.
    """

    def __init__(self, websocket: WebSocket, limits: MediaLimits, transport: str = "twilio"):
        self._websocket = websocket
        self.limits = limits
        self.transport = transport
        # Per-message work is a length check and a token bucket; the limits are read once here.
        self._max_chars = limits.max_message_bytes
        self._rate = limits.messages_per_sec
        self._burst = float(limits.burst_messages)
        self._tokens = self._burst
        self._refilled_at = time.monotonic()
        self._closed_with: int | None = None
        # What a close without a code sends (Pipecat closes with none when the call ends); a call
        # handed off (transferred, or moved off a draining worker) closes with CLOSE_HANDED_OFF.
        self.end_code = 1000

    def __getattr__(self, name: str) -> Any:
        return getattr(self._websocket, name)

    @property
    def closed_with(self) -> int | None:
        """The close code we sent, if the guard (or ``close``) closed the socket."""
        return self._closed_with

    @property
    def client_state(self) -> WebSocketState:
        # Once we have sent a close frame the peer is gone as far as any reader or writer
        # above us is concerned (Pipecat would otherwise try to close the socket again).
        if self._closed_with is not None:
            return WebSocketState.DISCONNECTED
        return self._websocket.client_state

    async def receive(self) -> Message:
        """The next ASGI message; a message that breaks a limit closes the socket instead."""
        if self._closed_with is not None:
            return {"type": "websocket.disconnect", "code": self._closed_with}
        message = await self._websocket.receive()
        if message["type"] != "websocket.receive":
            code = message.get("code")
            if code in _PROTOCOL_CLOSES:
                self._count(_PROTOCOL_CLOSES[code], f"closed by the protocol layer with {code}")
                self._closed_with = code
            return message
        text = message.get("text")
        if text is None:
            return await self._refuse(
                MediaRejected("binary", CLOSE_UNSUPPORTED_DATA, "binary frame")
            )
        if len(text) > self._max_chars:
            return await self._refuse(
                MediaRejected(
                    "oversized", CLOSE_MESSAGE_TOO_BIG, f"message over {self._max_chars} bytes"
                )
            )
        now = time.monotonic()
        tokens = min(self._burst, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now
        if tokens < 1.0:
            return await self._refuse(
                MediaRejected("rate", CLOSE_POLICY_VIOLATION, f"over {self._rate:.0f} messages/s")
            )
        self._tokens = tokens - 1.0
        return message

    async def receive_text(self) -> str | None:
        """The next text message, or None once the socket is closed (by either side)."""
        message = await self.receive()
        return message.get("text") if message["type"] == "websocket.receive" else None

    async def reject(self, error: MediaRejected) -> None:
        """Close the socket for ``error`` (a protocol violation found above the guard)."""
        await self._refuse(error)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close once (``code`` by default: ``end_code``); a socket the peer already left (or we
        closed) is left alone."""
        code = self.end_code if code is None else code
        if self._closed_with is not None:
            return
        self._closed_with = code
        if self._websocket.client_state == WebSocketState.DISCONNECTED:
            return
        if self._websocket.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await self._websocket.close(code=code, reason=reason)
        except (RuntimeError, OSError) as e:  # the peer vanished while we were closing
            logger.debug(f"{self.transport}: close({code}) after the peer left: {e}")

    async def _refuse(self, error: MediaRejected) -> Message:
        self._count(error.reason, str(error))
        await self.close(error.code, str(error)[:120])
        return {"type": "websocket.disconnect", "code": error.code}

    def _count(self, reason: str, detail: str) -> None:
        metrics.MEDIA_REJECTED.labels(transport=self.transport, reason=reason).inc()
        logger.warning(f"{self.transport} media socket closed: {detail}")
