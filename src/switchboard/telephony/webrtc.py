"""Browser calls on a worker: answer WebRTC offers from Redis and run the agent over aiortc.

``WebRTCAnswerer`` runs next to the ``WorkerService``: it takes offers the orchestrator placed
on this worker, answers each with Pipecat's ``SmallWebRTCConnection`` and runs the agent's
pipeline on a ``SmallWebRTCTransport``. While the call runs, ``CallEventsObserver`` tells the
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
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner
from pydantic import ValidationError

from switchboard.agent.config import AgentConfig
from switchboard.agent.pipeline import build_call_pipeline
from switchboard.agent.timing import TurnTimingObserver
from switchboard.dispatch.models import CallStatus
from switchboard.observability import metrics
from switchboard.settings import Settings
from switchboard.telephony.webrtc_signalling import Answer, Offer, OfferInbox
from switchboard.worker.calls import CallRecord, CallRegistry
from switchboard.worker.service import WorkerService

OUT_SAMPLE_RATE = 24000  # Piper's 22.05 kHz fits; Opus resamples to 48 kHz either way
MAX_CALL_SECS = 3600
_ANSWER_SETUP_SECS = 5.0  # aiortc gathers host candidates only, which takes milliseconds
_STOP_SECS = 5.0
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
        self._reply: list[str] | None = None
        self._turns_sent = 0
        self._bot_speaking = False

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._event("transcript", role="user", text=frame.text.strip())
        elif isinstance(frame, TTSSpeakFrame):
            self._event("transcript", role="agent", text=frame.text)
        elif isinstance(frame, LLMFullResponseStartFrame):
            self._reply = []
        elif isinstance(frame, LLMTextFrame) and self._reply is not None:
            self._reply.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame) and self._reply is not None:
            text, self._reply = "".join(self._reply).strip(), None
            if text:
                self._event("transcript", role="agent", text=text)
        elif isinstance(frame, BotStartedSpeakingFrame | BotStoppedSpeakingFrame):
            self._bot_speaking = isinstance(frame, BotStartedSpeakingFrame)
        elif isinstance(frame, InterruptionFrame) and self._bot_speaking:
            self._event("interrupted")
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


class WebRTCAnswerer:
    """Answers the browser calls the orchestrator places on this worker."""

    def __init__(
        self,
        service: WorkerService,
        settings: Settings,
        agent: AgentConfig,
        *,
        calls: CallRegistry | None = None,
    ):
        self._service = service
        self._settings = settings
        self._agent = agent
        self._calls = calls if calls is not None else CallRegistry()
        self._inbox = OfferInbox(service.redis, service.worker_id)
        self._loop: asyncio.Task | None = None
        self._setups: set[asyncio.Task] = set()
        self._browser_calls: set[str] = set()  # answered or connected: capped by webrtc_max_calls
        # Running browser calls: their pipeline, and whether the peer connection is up. Nothing
        # but us ends them at shutdown (no server connection carries them).
        self._running: dict[str, tuple[PipelineWorker, asyncio.Event]] = {}
        self._call_tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._take_offers(), name="webrtc-offers")
        logger.info(f"worker {self._service.worker_id} answers browser calls")

    async def stop(self) -> None:
        """Stop taking offers, refuse those still queued and end calls nobody connected to;
        connected calls drain with the service."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
            if self._setups:
                await asyncio.wait(self._setups, timeout=_STOP_SECS)
            try:
                for offer in await self._inbox.take_waiting():
                    await self._refuse(offer, "the agent is shutting down")
            except (redis.RedisError, OSError) as e:
                logger.warning(f"could not refuse queued browser calls: {e}")
        for worker, connected in list(self._running.values()):
            if not connected.is_set():
                await worker.cancel()

    async def close(self) -> None:
        """At process exit: stop, then end every browser call still running (bounded)."""
        await self.stop()
        if not self._call_tasks:
            return
        logger.info(f"ending {len(self._call_tasks)} browser call(s)")
        for worker, _connected in list(self._running.values()):
            await worker.cancel()
        _done, pending = await asyncio.wait(self._call_tasks, timeout=_STOP_SECS)
        for task in pending:
            task.cancel()

    async def _take_offers(self) -> None:
        while True:
            try:
                offer = await self._inbox.next_offer()
            except ValidationError as e:
                metrics.CONNECTION_ERRORS.labels(transport="webrtc").inc()
                logger.warning(f"dropping a malformed WebRTC offer: {e}")
                continue
            except (redis.RedisError, OSError) as e:
                logger.warning(f"taking WebRTC offers failed ({e}); retrying")
                await asyncio.sleep(1)
                continue
            if offer is None:
                continue
            task = asyncio.create_task(self._answer(offer), name=f"webrtc-answer-{offer.call_id}")
            self._setups.add(task)
            task.add_done_callback(self._setups.discard)
            task.add_done_callback(_log_setup_failure)

    async def _answer(self, offer: Offer) -> None:
        """Take a slot, answer the offer and start the call; or tell the orchestrator why not."""
        if time.time() > offer.deadline:
            logger.warning(f"{offer.call_id}: offer arrived after its deadline, ignored")
            return  # nobody waits for it; its reservation expires on its own
        service = self._service
        if service.draining:
            metrics.CALLS_REJECTED.labels(reason="worker_full").inc()  # as Twilio streams count it
            await self._refuse(offer, "the agent is shutting down")
            return
        # No pool slot yet: the call takes one when its peer connection is up (_run_call).
        if len(self._browser_calls) >= self._settings.webrtc_max_calls:
            metrics.CALLS_REJECTED.labels(reason="browser_cap").inc()
            await self._refuse(offer, "worker has no free slot for browser calls")
            return
        self._browser_calls.add(offer.call_id)
        connection = SmallWebRTCConnection(
            connection_timeout_secs=max(1, int(self._settings.webrtc_connect_timeout_secs))
        )
        try:
            async with asyncio.timeout(_ANSWER_SETUP_SECS):
                await connection.initialize(sdp=offer.sdp, type=offer.type)
            local = connection.get_answer()
            if local is None:
                raise RuntimeError("aiortc produced no SDP answer")
        except Exception as e:  # a bad offer fails this call only; aiortc raises many kinds
            metrics.CONNECTION_ERRORS.labels(transport="webrtc").inc()
            logger.warning(f"{offer.call_id}: cannot answer the browser's offer: {e!r}")
            await connection.pc.close()
            self._browser_calls.discard(offer.call_id)
            await self._refuse(offer, "the offer could not be answered")
            return
        call = asyncio.create_task(
            self._run_call(offer, connection), name=f"webrtc-{offer.call_id}"
        )
        service.track_stream_call(call)
        self._call_tasks.add(call)
        call.add_done_callback(self._call_tasks.discard)
        call.add_done_callback(lambda _task: self._browser_calls.discard(offer.call_id))
        reply = Answer(
            request_id=offer.request_id, sdp=local["sdp"], type=local["type"], pc_id=local["pc_id"]
        )
        # If this reply is lost the browser never connects and the call's watchdog ends it.
        await WorkerService._safe(self._inbox.reply(reply))

    async def _refuse(self, offer: Offer, reason: str) -> None:
        await WorkerService._safe(self._inbox.refuse(offer, reason))

    async def _run_call(self, offer: Offer, connection: SmallWebRTCConnection) -> None:
        """Run one browser call to its end, then free its slot and record it."""
        call_id = offer.call_id
        transport = SmallWebRTCTransport(
            connection, TransportParams(audio_in_enabled=True, audio_out_enabled=True)
        )
        call = build_call_pipeline(
            transport, self._agent, self._settings, out_sample_rate=OUT_SAMPLE_RATE
        )
        call.worker.add_observer(CallEventsObserver(connection.send_app_message, call.timings))
        connected = asyncio.Event()

        @transport.event_handler("on_client_connected")
        async def _connected(_transport, _client):
            if await self._take_slot(call_id):
                connected.set()
            else:
                await call.worker.cancel()

        @transport.event_handler("on_app_message")
        async def _message(_transport, message, _sender):
            if isinstance(message, dict) and message.get("type") == "hangup":
                logger.info(f"{call_id}: the caller hung up")
                await call.worker.cancel()

        watchdog = asyncio.create_task(
            _cancel_unless_connected(call.worker, connected, call_id, self._settings.webrtc_connect_timeout_secs),
            name=f"webrtc-watchdog-{call_id}",
        )
        self._running[call_id] = (call.worker, connected)
        record = CallRecord(call_sid=call_id, stream_sid=connection.pc_id, call_id=call_id)
        self._calls.add(record)
        metrics.ACTIVE_CALLS.inc()
        try:
            await self._service.ledger.record(
                call_id, CallStatus.RUNNING, worker=self._service.worker_id
            )
            runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
            await runner.add_workers(call.worker)
            async with asyncio.timeout(MAX_CALL_SECS):
                await runner.run()
            record.outcome = "completed" if connected.is_set() else "failed"
        except Exception:
            record.outcome = "failed"
            metrics.PIPELINE_ERRORS.labels(stage="call").inc()
            logger.exception(f"{call_id}: browser call failed")
        finally:
            self._running.pop(call_id, None)
            watchdog.cancel()
            metrics.ACTIVE_CALLS.dec()
            if connection.pc.connectionState != "closed":
                await WorkerService._safe(connection.disconnect())
            record.ended_at = time.time()
            record.intents = [m.name for m in call.responder.matches]
            record.turns = call.timings.as_dicts()
            await self._record_end(record, holds_slot=connected.is_set())

    async def _take_slot(self, call_id: str) -> bool:
        """The pool slot of a browser call whose peer connection just came up."""
        try:
            if await self._service.registry.take_slot(self._service.worker_id):
                return True
        except (redis.RedisError, OSError) as e:
            logger.warning(f"{call_id}: cannot take a slot for a browser call: {e}")
            return False
        metrics.CALLS_REJECTED.labels(reason="worker_full").inc()
        logger.warning(f"{call_id}: connected, but the worker has no free slot: hanging up")
        return False

    async def _record_end(self, record: CallRecord, *, holds_slot: bool) -> None:
        """Free the call's slot (if it took one) and write its outcome and turn latencies."""
        service = self._service
        metrics.CALLS_TOTAL.labels(outcome=record.outcome).inc()
        for turn in record.turns:
            if turn.get("bot_started_ms") is not None:
                await service.record_turn_latency(turn["bot_started_ms"])
        status = CallStatus.COMPLETED if record.outcome == "completed" else CallStatus.FAILED
        if holds_slot:
            await WorkerService._safe(service.registry.release_slot(service.worker_id))
        await WorkerService._safe(service.ledger.finish(record.call_id, status))
        logger.info(f"{record.call_id}: browser call {record.outcome}, intents {record.intents}")


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


def _log_setup_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        metrics.CONNECTION_ERRORS.labels(transport="webrtc").inc()
        logger.opt(exception=error).error(f"{task.get_name()}: setting up a browser call failed")
