"""A browser's WebRTC peer as a call: Pipecat's ``SmallWebRTCTransport`` over aiortc.

``worker.browser_calls.WebRTCAnswerer`` answers the offer; :class:`WebRTCPeerAdapter` is the
answered peer, ready for the call runner. While the call runs, ``CallEventsObserver`` tells the
browser over the data channel what each side said and how long each turn took.

Messages to the browser are JSON objects ``{"type": "switchboard", "version": 1, "event": ...}``:

| event | fields |
|---|---|
| ``transcript`` | ``role`` (``user`` or ``agent``), ``text`` |
| ``interrupted`` | the caller talked over the agent |
| ``latency`` | ``turn`` (1-based), ``voice_to_voice_ms``, ``transcript_ms``, ``turn_end_ms``, ``first_audio_ms`` |

The browser may send ``{"type": "hangup"}``; closing its peer connection ends the call too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from loguru import logger
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

from switchboard.observability import metrics
from switchboard.spoken_lines import SpokenLines
from switchboard.telephony.base import CallAdapter, CallIds, NoCallControl

if TYPE_CHECKING:
    from switchboard.call.conversation.pipeline import CallPipeline
    from switchboard.call.conversation.timing import TurnTimingObserver

OUT_SAMPLE_RATE = 24000  # Piper's 22.05 kHz fits; Opus resamples to 48 kHz either way
MESSAGE_TYPE = "switchboard"


class CallEventsObserver(BaseObserver):
    """Sends the call's transcript and per-turn latency to the caller as it happens.

    Latencies are the ``TurnTimingObserver``'s own records (voice-to-voice as the agent sees
    it), forwarded as each turn is finished, so the browser and ``/stats`` show one number.
    """

    def __init__(
        self, send: Callable[[dict[str, Any]], None], timings: TurnTimingObserver, **kwargs
    ):
        super().__init__(observe_every_push=False, **kwargs)
        self._send = send
        self._timings = timings
        self._lines = SpokenLines()
        self._turns_sent = 0

    async def on_push_frame(self, data: FramePushed):
        said = self._lines.see(data.frame)
        if said is not None:
            role, text = said
            if role == "interrupted":
                self._event("interrupted")
            else:
                self._event("transcript", role=role, text=text)
        # Frames flow every 20 ms, so a finished turn is reported within a frame or two.
        turns = self._timings.turns
        while self._turns_sent < len(turns):
            turn = turns[self._turns_sent]
            self._turns_sent += 1
            self._event(
                "latency",
                turn=self._turns_sent,
                voice_to_voice_ms=turn.bot_started_ms,
                transcript_ms=turn.transcript_ms,
                turn_end_ms=turn.turn_end_ms,
                first_audio_ms=turn.first_tts_audio_ms,
            )

    def _event(self, event: str, **fields: Any) -> None:
        self._send({"type": MESSAGE_TYPE, "version": 1, "event": event, **fields})


class WebRTCPeerAdapter(CallAdapter):
    """An answered browser peer; the call is abandoned (not stored) if the browser never connects."""

    ingress = "webrtc"
    out_sample_rate = OUT_SAMPLE_RATE

    def __init__(
        self,
        connection: SmallWebRTCConnection,
        call_id: str,
        *,
        connect_timeout_secs: float,
        on_connected: Callable[[], Awaitable[bool]] | None = None,
    ):
        """``on_connected`` runs when the peer connection is up and may refuse the call (False):
        a browser call takes its pool slot only then, so an offer that never connects holds
        nothing a phone call needs."""
        self.ids = CallIds(call_sid=call_id, stream_sid=connection.pc_id, call_id=call_id)
        self.control = NoCallControl()
        self.connection = connection
        self.connected = asyncio.Event()
        self.worker: PipelineWorker | None = None
        self._connect_timeout_secs = connect_timeout_secs
        self._on_connected = on_connected
        self._transport: SmallWebRTCTransport | None = None
        self._watchdog: asyncio.Task | None = None
        self._abandoned = False

    def transport(self) -> SmallWebRTCTransport:
        if self._transport is None:
            self._transport = SmallWebRTCTransport(
                self.connection, TransportParams(audio_in_enabled=True, audio_out_enabled=True)
            )
        return self._transport

    def attach(self, call: CallPipeline) -> None:
        transport, call_id = self.transport(), self.ids.call_id
        self.worker = call.worker
        call.worker.add_observer(CallEventsObserver(self.connection.send_app_message, call.timings))

        @transport.event_handler("on_client_connected")
        async def _connected(_transport, _client):
            if self._on_connected is None or await self._on_connected():
                self.connected.set()
            else:
                await call.worker.cancel()

        @transport.event_handler("on_app_message")
        async def _message(_transport, message, _sender):
            if isinstance(message, dict) and message.get("type") == "hangup":
                logger.info(f"{call_id}: the caller hung up")
                await call.worker.cancel()

        self._watchdog = asyncio.create_task(
            _cancel_unless_connected(
                call.worker,
                self.connected,
                call_id,
                0.0 if self._abandoned else self._connect_timeout_secs,
            ),
            name=f"webrtc-watchdog-{call_id}",
        )

    async def abandon(self) -> None:
        """At shutdown: end the call unless its peer is connected, even if its pipeline is
        still being built (it then ends as soon as it is)."""
        self._abandoned = True
        if self.worker is not None and not self.connected.is_set():
            await self.worker.cancel()

    def succeeded(self) -> bool:
        return self.connected.is_set()

    async def close(self) -> None:
        if not self.connected.is_set():
            metrics.WEBRTC_OFFERS_ABANDONED.inc()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.connection.pc.connectionState != "closed":
            await self.connection.disconnect()


async def _cancel_unless_connected(
    worker: PipelineWorker, connected: asyncio.Event, call_id: str, limit_secs: float
) -> None:
    """Answered, but the browser never connected: end the call (it holds no pool slot, but
    counts against the worker's browser-call cap)."""
    try:
        await asyncio.wait_for(connected.wait(), limit_secs)
    except TimeoutError:
        metrics.CONNECTION_ERRORS.labels(transport="webrtc").inc()
        logger.warning(f"{call_id}: the browser never connected, giving up")
        await worker.cancel()
