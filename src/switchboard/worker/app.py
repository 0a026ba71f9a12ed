"""The worker's HTTP/WebSocket server: media streams, health, metrics and call records.

:class:`WorkerParts` holds what one worker process runs calls with (agents, recent calls, the
archive, the :class:`~switchboard.call.host.CallHost` every ingress admits calls through);
:func:`create_worker_app` puts the routes around it: the streams of ``worker.streams`` (pooled
or standalone), transfer reports, health, metrics and the calls this process ran.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Response
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from switchboard.agent.config import AgentConfig
from switchboard.agent.directory import AgentDirectory
from switchboard.agent.tools import close_clients as close_tool_clients
from switchboard.call.context import CallEndedHook
from switchboard.call.host import CallHost
from switchboard.call.record import RecentCalls
from switchboard.call_ids import call_id_for_twilio
from switchboard.call_log import TransferResult
from switchboard.engines import build_responder, build_stt, build_tts
from switchboard.engines.shared_clients import close_shared_clients
from switchboard.http.auth import (
    install_operator_keys,
    require_api_key,
    require_caller_data_key,
)
from switchboard.http.body_limit import BodySizeLimitMiddleware
from switchboard.records.archive import CallArchive
from switchboard.settings import Settings
from switchboard.telephony.base import TransferOutcome
from switchboard.telephony.twilio import RESUME_PATH
from switchboard.telephony.twilio_rest import WarmTransferWaits, transfer_status_router
from switchboard.worker.browser_calls import WebRTCAnswerer
from switchboard.worker.service import WorkerService
from switchboard.worker.streams import MEDIA_PATH, pooled_stream_router, standalone_stream_router

__all__ = ["MEDIA_PATH", "WorkerParts", "create_worker_app", "warm_engines"]


def warm_engines(settings: Settings, agents: AgentDirectory) -> None:
    """Load every model now and synthesize the fixed replies, so no call pays for it."""
    from switchboard.engines.piper_tts import shared_piper
    from switchboard.engines.turn_detection import warm_up

    # Every call builds these (a cloud engine with its local fallback, the responder): the first
    # build imports the providers' SDKs and loads the fallback models, ~2 s that would otherwise
    # block the event loop under the first call, and every stream handshake waiting behind it.
    build_stt(settings)
    build_tts(settings)
    build_responder(settings, agents.default)
    warm_up()
    # Piper is the TTS or the fallback for a cloud TTS: either way its fixed replies are warm.
    shared_piper(settings.inference_threads).prewarm(
        [u for a in agents.agents() for u in a.fixed_utterances()], disk_cache=settings.tts_cache_dir
    )


@dataclass
class WorkerParts:
    """What one worker process runs calls with; ``service`` is None for a standalone worker."""

    settings: Settings
    agent: AgentConfig
    service: WorkerService | None
    agents: AgentDirectory
    calls: RecentCalls
    archive: CallArchive
    host: CallHost
    answerer: WebRTCAnswerer | None
    warm_waits: WarmTransferWaits = field(default_factory=WarmTransferWaits)
    standalone_calls: set[asyncio.Task] = field(default_factory=set)
    ready: bool = False

    @classmethod
    def build(
        cls,
        settings: Settings,
        agent: AgentConfig,
        service: WorkerService | None,
        on_call_ended: Sequence[CallEndedHook],
    ) -> WorkerParts:
        calls = service.calls if service is not None else RecentCalls()
        archive = CallArchive(settings, agent)
        agents = AgentDirectory(agent, settings.agents_dir, reload_secs=settings.agents_reload_secs)
        host = CallHost(
            settings, agents, calls, archive=archive, on_ended=on_call_ended, pool=service
        )
        answerer = None
        if service is not None:
            service.host = host  # room jobs are admitted like every other call
            answerer = WebRTCAnswerer(service, settings, host)
        return cls(settings, agent, service, agents, calls, archive, host, answerer)

    @property
    def active(self) -> int:
        return self.service.active if self.service is not None else len(self.standalone_calls)

    async def start(self) -> None:
        await asyncio.to_thread(warm_engines, self.settings, self.agents)
        await self.archive.start()
        if self.service is not None:
            await self.service.start()
        if self.answerer is not None:
            await self.answerer.start()
        self.ready = True
        logger.info(f"agent '{self.agent.name}' ready on port {self.settings.port}")

    async def stop(self) -> None:
        self.ready = False
        if self.answerer is not None:
            await self.answerer.close()
        await self.archive.stop()
        await close_shared_clients()
        await close_tool_clients()

    async def drain(self) -> None:
        """Stop taking calls and let the live ones end (up to the drain deadline)."""
        self.ready = False
        if self.answerer is not None:
            await self.answerer.stop()
        if self.service is not None:
            await self.service.drain()
        elif self.standalone_calls:
            logger.info(f"waiting for {len(self.standalone_calls)} live call(s)")
            await asyncio.wait(self.standalone_calls, timeout=self.settings.drain_timeout_secs)

    def transfer_result(self, call_sid: str, outcome: TransferOutcome, form: dict[str, str]) -> None:
        """Twilio's report of a cold transfer's dial, which comes after the call left us."""
        record = self.calls.get(call_sid)
        if record is not None:
            record.log.add(TransferResult(outcome=outcome.value, dial_status=form.get("DialCallStatus", "")))
            # The call was saved when its stream ended: the stored record learns it too.
            self.archive.amend(record.call_id or call_id_for_twilio(record.call_sid), record.log)


def create_worker_app(
    settings: Settings,
    agent: AgentConfig,
    service: WorkerService | None = None,
    *,
    on_call_ended: Sequence[CallEndedHook] = (),
) -> FastAPI:
    """Build the worker server; models load during start-up, before it reports ready.

    ``on_call_ended`` hooks run once per finished call of any ingress, with its record.
    """
    parts = WorkerParts.build(settings, agent, service, on_call_ended)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await parts.start()
        yield
        await parts.stop()

    # A worker is an internal listener: it describes its API to nobody.
    app = FastAPI(
        title="Switchboard worker", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    install_operator_keys(app, settings)
    app.state.drain = parts.drain
    app.state.parts = parts
    # Twilio's callbacks (transfer reports) go to the public URL. In a pool that is the
    # orchestrators, which forward them to the worker holding the call: a pooled worker's own
    # address is internal (and the Host its streams arrive with is the edge's view of it).
    callback_url = settings.public_url
    # In a pool an unanswered cold transfer goes back through the orchestrators to an agent.
    resume_url = f"{callback_url.rstrip('/')}{RESUME_PATH}" if service is not None and callback_url else None
    app.include_router(
        transfer_status_router(settings, callback_url, parts.transfer_result, parts.warm_waits, resume_url=resume_url)
    )
    app.include_router(status_router(parts))
    if service is not None:
        app.include_router(
            pooled_stream_router(settings, service, parts.host, callback_url=callback_url, warm_waits=parts.warm_waits)
        )
    else:
        app.include_router(
            standalone_stream_router(
                settings, parts.host, parts.standalone_calls, callback_url=callback_url, warm_waits=parts.warm_waits
            )
        )
    return app


def status_router(parts: WorkerParts) -> APIRouter:
    """``/health`` (open), ``/metrics`` and ``/calls`` (behind the operator keys)."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> Response:
        body: dict = {"status": "ok" if parts.ready else "unavailable", "active_calls": parts.active}
        if parts.service is not None:
            service = parts.service
            body.update(worker_id=service.worker_id, draining=service.draining, capacity=parts.settings.max_calls)
        parts.agents.refresh()
        if parts.agents.errors:
            body["agent_config_errors"] = sorted(parts.agents.errors)
        return Response(json.dumps(body), status_code=200 if parts.ready else 503, media_type="application/json")

    @router.get("/metrics", dependencies=[Depends(require_api_key)])
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/calls", dependencies=[Depends(require_caller_data_key)])
    async def calls() -> list[dict]:
        return [r.view() for r in parts.calls.recent()]

    @router.get("/calls/{call_sid}", dependencies=[Depends(require_caller_data_key)])
    async def call(call_sid: str) -> dict:
        record = parts.calls.get(call_sid)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no call {call_sid}")
        return record.view()

    return router
