"""The orchestrator's HTTP API: webhooks in, jobs and stream placements out, health and stats.

Orchestrators keep no state of their own (it is all in Redis), so several can run behind a
load balancer.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

import redis.asyncio as redis
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from switchboard.agent.config import load_agent_config
from switchboard.agent.directory import AgentDirectory
from switchboard.dispatch.admission import HeadroomBoard
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.connection import connect
from switchboard.dispatch.hold import HoldLine
from switchboard.dispatch.models import CallStatus, Job, JobKind
from switchboard.dispatch.queue import JobQueue
from switchboard.dispatch.redemptions import StreamRedemptions
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.dispatch.sessions import CallSessions
from switchboard.http.auth import (
    install_operator_keys,
    require_api_key,
    require_caller_data_key,
)
from switchboard.http.body_limit import BodySizeLimitMiddleware
from switchboard.observability import metrics
from switchboard.observability.logging import call_context
from switchboard.orchestrator.callbacks import create_callback_router
from switchboard.orchestrator.calls_api import CallsBackend, create_calls_router
from switchboard.orchestrator.livekit_webhooks import (
    QueuedRoomJobs,
    WebhookRejected,
    agent_needed,
    bridge_ended,
    call_to_refuse,
    caller_gone,
    close_call_room,
    first_delivery,
    verify_livekit_webhook,
)
from switchboard.orchestrator.media_edge import (
    Relays,
    create_media_edge_router,
)
from switchboard.orchestrator.overflow import create_overflow_router
from switchboard.orchestrator.placement import (
    StreamPlacer,
    create_placement_router,
    redis_down_twiml,
)
from switchboard.orchestrator.rate_limits import RateLimitMiddleware
from switchboard.orchestrator.stats import collect_stats
from switchboard.orchestrator.web import create_web_router
from switchboard.settings import Settings
from switchboard.telephony.livekit import is_call_room
from switchboard.telephony.outbound import (
    outbound_router,
)

# A held call's state outlives the longest wait (max_wait_secs is at most an hour).
_HELD_CALL_TTL_SECS = 2 * 3600


class ManualDispatch(BaseModel):
    """Start an agent by hand: for a LiveKit room, or a test job that only holds a slot."""

    kind: JobKind = JobKind.TEST
    room: str | None = Field(None, description="call-* room to join (livekit_room jobs)")
    duration_secs: float = Field(1.0, ge=0, le=3600)


def create_orchestrator_app(settings: Settings) -> FastAPI:
    client: redis.Redis = connect(settings.redis_url)
    queue = JobQueue(client)
    registry = WorkerRegistry(client, settings.worker_ttl_secs)
    ledger = CallLedger(client, settings.call_state_ttl_secs)
    records = CallsBackend.from_settings(settings)
    room_jobs = QueuedRoomJobs(client, queue, ledger, settings.call_state_ttl_secs)
    # The agents' overflow answers (busy, transfer, hold queue) are given here, before any worker.
    agents = AgentDirectory(
        load_agent_config(settings.agent_config), settings.agents_dir, reload_secs=settings.agents_reload_secs
    )
    hold = HoldLine(client, _HELD_CALL_TTL_SECS)
    headroom = HeadroomBoard(client, settings.worker_ttl_secs)
    sessions = CallSessions(client, settings.call_session_ttl_secs)
    placer = StreamPlacer(settings, registry, ledger, sessions, agents, hold)
    assert placer.desk is not None

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        try:
            await queue.ensure_group()
        except redis.RedisError as e:
            logger.warning(f"redis not reachable at start-up ({e}); /health will say so")
        await records.open()
        serving = asyncio.create_task(placer.desk.run(), name="hold-queue")
        yield
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await placer.desk.close()
        await records.close()
        await client.aclose()

    # FastAPI's /docs, /redoc and /openapi.json are public; ours are opt-in and need the key.
    app = FastAPI(
        title="Switchboard orchestrator", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    install_operator_keys(app, settings)
    if settings.api_docs:
        _describe_api(app)
    # Outermost first: a flood is refused from Redis before its body is read or its signature checked.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(RateLimitMiddleware, settings=settings)
    app.include_router(create_web_router(settings, client, registry))
    relays = Relays()
    app.include_router(
        create_media_edge_router(settings, registry, relays, sessions, StreamRedemptions(client))
    )
    app.include_router(create_callback_router(settings, registry, ledger))
    app.include_router(create_calls_router(settings, records, ledger))
    app.include_router(create_placement_router(settings, placer))
    app.include_router(create_overflow_router(settings, placer.desk))

    @app.exception_handler(redis.RedisError)
    async def redis_unavailable(request: Request, exc: redis.RedisError) -> Response:
        logger.error(f"redis unavailable: {exc}")
        metrics.CONNECTION_ERRORS.labels(transport="redis").inc()
        if (twiml := redis_down_twiml(request.url.path)) is not None:
            metrics.CALLS_REJECTED.labels(reason="redis_unavailable").inc()
            return Response(twiml, media_type="application/xml")
        body = json.dumps({"error": "dispatch store unavailable, try again"})
        return Response(body, status_code=503, media_type="application/json")

    @app.exception_handler(SQLAlchemyError)
    async def records_unavailable(_request: Request, exc: SQLAlchemyError) -> Response:
        logger.error(f"call history database unavailable: {exc}")
        body = json.dumps({"error": "call history unavailable, try again"})
        return Response(body, status_code=503, media_type="application/json")

    async def drain() -> None:
        await relays.drain(settings.drain_timeout_secs)

    app.state.drain = drain
    app.include_router(outbound_router(settings, require_caller_data_key, room_jobs))

    @app.get("/health/live")
    async def live() -> dict:
        return {"status": "ok"}

    @app.get("/health")
    async def health() -> Response:
        checks: dict[str, object] = {}
        try:
            await client.ping()
            checks["redis"] = "ok"
            workers = await registry.live_workers()
            checks["live_workers"] = len(workers)
        except redis.RedisError as e:
            checks["redis"] = f"unreachable: {e}"
            checks["live_workers"] = 0
        if relays.draining:
            checks["draining"] = True  # stopping: the load balancer should send calls elsewhere
        ready = checks["redis"] == "ok" and checks["live_workers"] > 0 and not relays.draining
        body = {"status": "ok" if ready else "unavailable", **checks}
        return Response(json.dumps(body), status_code=200 if ready else 503, media_type="application/json")

    @app.get("/stats", dependencies=[Depends(require_api_key)])
    async def stats() -> dict:
        return await collect_stats(client, queue, registry, headroom, hold)

    @app.get("/metrics", dependencies=[Depends(require_api_key)])
    async def prometheus_metrics() -> Response:
        try:
            metrics.QUEUE_LENGTH.set(await queue.waiting())
            metrics.WORKERS_LIVE.set(len(await registry.live_workers()))
        except redis.RedisError:
            pass
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/webhooks/livekit")
    async def livekit_webhook(request: Request) -> dict:
        received_at = time.time()
        if not (settings.livekit_api_key and settings.livekit_api_secret):
            metrics.WEBHOOKS.labels(provider="livekit", result="unconfigured").inc()
            raise HTTPException(status_code=401, detail="LiveKit webhooks need LIVEKIT_API_KEY/SECRET")
        body = await request.body()
        try:
            webhook = verify_livekit_webhook(
                body,
                request.headers.get("Authorization"),
                settings.livekit_api_key,
                settings.livekit_api_secret.get_secret_value(),
            )
        except WebhookRejected as e:
            metrics.WEBHOOKS.labels(provider="livekit", result="bad_signature").inc()
            raise HTTPException(status_code=401, detail=f"webhook rejected: {e}") from e
        event = webhook.event
        if not event.id:  # LiveKit always sends one: without it a replay looks like a new event
            metrics.WEBHOOKS.labels(provider="livekit", result="no_event_id").inc()
            raise HTTPException(status_code=400, detail="webhook rejected: the event has no id")
        if not await first_delivery(client, webhook, time.time()):
            metrics.WEBHOOKS.labels(provider="livekit", result="replayed").inc()
            raise HTTPException(status_code=401, detail=f"event {event.id} already received")
        if (room := call_to_refuse(event)) is not None:
            await close_call_room(settings, room, "no agent answers the number dialed")
            metrics.WEBHOOKS.labels(provider="livekit", result="refused").inc()
            return {"dispatched": False, "reason": "no agent answers this number"}
        if (room := caller_gone(event)) is not None:
            await room_jobs.caller_left(room)
        if (room := bridge_ended(event)) is not None:
            await close_call_room(settings, room, "one side of a transferred call hung up")
        needed = agent_needed(event)
        if needed is None:
            metrics.WEBHOOKS.labels(provider="livekit", result="ignored").inc()
            return {"dispatched": False}
        job = Job(
            kind=JobKind.LIVEKIT_ROOM, room=needed.room, caller=needed.caller, sip=needed.sip, created_at=received_at
        )
        with call_context(job.call_id):
            # An outbound call's own callee joining finds the room taken by its job, too.
            if not await room_jobs.dispatch(job):
                metrics.WEBHOOKS.labels(provider="livekit", result="duplicate_room").inc()
                return {"dispatched": False, "reason": "room already has an agent"}
            metrics.WEBHOOKS.labels(provider="livekit", result="dispatched").inc()
            return {"dispatched": True, "call_id": job.call_id, "job_id": job.job_id}

    @app.post("/manual/dispatch", dependencies=[Depends(require_api_key)])
    async def manual_dispatch(request: ManualDispatch) -> dict:
        if request.kind is JobKind.LIVEKIT_ROOM and not (request.room and is_call_room(request.room)):
            raise HTTPException(status_code=422, detail="livekit_room jobs need a room named call-*")
        job = Job(kind=request.kind, room=request.room, duration_secs=request.duration_secs)
        with call_context(job.call_id):
            state = ledger.state(CallStatus.QUEUED, job_id=job.job_id, manual=1)
            await queue.enqueue(job, state, settings.call_state_ttl_secs)
            return {"call_id": job.call_id, "job_id": job.job_id}

    return app


def _describe_api(app: FastAPI) -> None:
    """``/openapi.json`` and its two readers, ``/docs`` and ``/redoc``, behind the operator key
    (a browser that answered the key's Basic challenge sends it with the pages' own fetch)."""
    guard = [Depends(require_api_key)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API")
