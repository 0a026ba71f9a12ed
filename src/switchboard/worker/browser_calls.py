"""Browser calls on a worker: answer WebRTC offers from Redis and run them as calls.

``WebRTCAnswerer`` runs next to the ``WorkerService``: it takes offers the orchestrator placed
on this worker, answers each with Pipecat's ``SmallWebRTCConnection`` and hands the answered
peer (``telephony.webrtc.WebRTCPeerAdapter``) to the call runner.

Each offer arrives holding a place under this worker's browser cap in Redis
(``WorkerRegistry.reserve_browser``). The answerer keeps that hold for as long as the call may
still connect (``webrtc_connect_timeout_secs``), for good once it has, and releases it when the
call ends or is refused, so a dead offer gives its place back within the connect timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import redis.asyncio as redis
from loguru import logger
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pydantic import ValidationError

from switchboard.agent.config import AgentConfig
from switchboard.dispatch.models import CallStatus
from switchboard.observability import metrics
from switchboard.records.archive import CallArchive
from switchboard.settings import Settings
from switchboard.telephony.webrtc import WebRTCPeerAdapter
from switchboard.telephony.webrtc_signalling import Answer, Offer, OfferInbox
from switchboard.worker.calls import CallRegistry
from switchboard.worker.runner import CallEndedHook, run_call
from switchboard.worker.service import WorkerService
from switchboard.worker.slots import PoolSlot

_ANSWER_SETUP_SECS = 5.0  # aiortc gathers host candidates only, which takes milliseconds
_STOP_SECS = 5.0
# Between answering and the connect watchdog starting, the call's pipeline is built.
_PIPELINE_BUILD_SECS = 5.0


class WebRTCAnswerer:
    """Answers the browser calls the orchestrator places on this worker."""

    def __init__(
        self,
        service: WorkerService,
        settings: Settings,
        agent: AgentConfig,
        *,
        calls: CallRegistry | None = None,
        on_ended: Sequence[CallEndedHook] = (),
        archive: CallArchive | None = None,
    ):
        self._service = service
        self._settings = settings
        self._agent = agent
        self._calls = calls if calls is not None else CallRegistry()
        self._on_ended = on_ended
        self._archive = archive
        self._inbox = OfferInbox(service.redis, service.worker_id)
        self._loop: asyncio.Task | None = None
        self._setups: set[asyncio.Task] = set()
        self._browser_calls: set[str] = set()  # answered or connected: capped by webrtc_max_calls
        # Running browser calls by call id. Nothing but us ends them at shutdown (no server
        # connection carries them).
        self._running: dict[str, WebRTCPeerAdapter] = {}
        self._call_tasks: set[asyncio.Task] = set()
        self._stopping = False

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._take_offers(), name="webrtc-offers")
        logger.info(f"worker {self._service.worker_id} answers browser calls")

    async def stop(self) -> None:
        """Stop taking offers, refuse those still queued and end calls nobody connected to;
        connected calls drain with the service."""
        self._stopping = True
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
        for adapter in list(self._running.values()):
            await adapter.abandon()

    async def close(self) -> None:
        """At process exit: stop, then end every browser call still running (bounded)."""
        await self.stop()
        if not self._call_tasks:
            return
        logger.info(f"ending {len(self._call_tasks)} browser call(s)")
        for adapter in list(self._running.values()):
            if adapter.worker is not None:
                await adapter.worker.cancel()
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
        """Answer the offer and start the call; or tell the orchestrator why not."""
        if time.time() > offer.deadline:
            logger.warning(f"{offer.call_id}: offer arrived after its deadline, ignored")
            await self._release(offer.call_id)  # nobody waits for it
            return
        service = self._service
        if service.draining:
            metrics.CALLS_REJECTED.labels(reason="worker_full").inc()  # as Twilio streams count it
            await self._refuse(offer, "the agent is shutting down")
            return
        # No pool slot yet: the call takes one when its peer connection is up (see _run_call).
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
        # Held until it may still connect; before the call starts, so its release comes after.
        connect_by = time.time() + self._settings.webrtc_connect_timeout_secs + _PIPELINE_BUILD_SECS
        await WorkerService._safe(
            service.registry.hold_browser(service.worker_id, offer.call_id, connect_by)
        )
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
        await self._release(offer.call_id)
        await WorkerService._safe(self._inbox.refuse(offer, reason))

    async def _release(self, call_id: str) -> None:
        """Give the call's place under the browser cap back."""
        service = self._service
        await WorkerService._safe(service.registry.release_browser(service.worker_id, call_id))

    async def _run_call(self, offer: Offer, connection: SmallWebRTCConnection) -> None:
        """Run one browser call to its end through the call runner, which frees its slot."""
        service = self._service
        slot = PoolSlot(service, offer.call_id, held=False)

        async def connected() -> bool:
            if not await slot.take():
                return False
            await service._safe(
                service.registry.hold_browser(service.worker_id, offer.call_id, float("inf"))
            )
            return True

        adapter = WebRTCPeerAdapter(
            connection,
            offer.call_id,
            connect_timeout_secs=self._settings.webrtc_connect_timeout_secs,
            on_connected=connected,
        )
        # Known before the first await, so a shutdown that starts now ends this call too.
        self._running[offer.call_id] = adapter
        if self._stopping:
            await adapter.abandon()
        try:
            await service._safe(
                service.ledger.record(offer.call_id, CallStatus.RUNNING, worker=service.worker_id)
            )
            await run_call(
                adapter,
                self._agent,
                self._settings,
                self._calls,
                slot=slot,
                on_ended=self._on_ended,
                archive=self._archive,
            )
        finally:
            self._running.pop(offer.call_id, None)
            await self._release(offer.call_id)


def _log_setup_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        metrics.CONNECTION_ERRORS.labels(transport="webrtc").inc()
        logger.opt(exception=error).error(f"{task.get_name()}: setting up a browser call failed")
