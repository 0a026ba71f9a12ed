"""The worker's HTTP/WebSocket server: media streams, health, metrics and call records.

In a pool (``switchboard worker``) Twilio streams arrive at ``/twilio/media/{token}``, relayed
by the orchestrators' media edge (``orchestrator.media_edge``) to this worker's internal address,
with a token from the orchestrator. Standalone (``switchboard serve``) the worker also answers the
Twilio webhook itself and takes streams at ``/twilio/media``: one process, no Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict

import redis.asyncio as redis
from fastapi import (
    Depends,
    FastAPI,
    HTTPException,
    Request,
    Response,
    WebSocket,
)
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from switchboard.agent.config import AgentConfig
from switchboard.agent.directory import AgentDirectory
from switchboard.dispatch.models import CallStatus
from switchboard.engines import build_responder, build_stt, build_tts
from switchboard.observability import metrics
from switchboard.observability.logging import call_context
from switchboard.orchestrator.auth import (
    install_operator_keys,
    require_api_key,
    require_caller_data_key,
)
from switchboard.orchestrator.body_limit import BodySizeLimitMiddleware
from switchboard.orchestrator.placement import RESUME_PATH
from switchboard.records.archive import CallArchive
from switchboard.settings import Settings
from switchboard.telephony import stream_tokens
from switchboard.telephony.base import TransferOutcome
from switchboard.telephony.media_socket import CLOSE_HANDED_OFF, MediaLimits, MediaSocketGuard
from switchboard.telephony.outbound import (
    answering_machine_twiml,
    outbound_router,
    stream_parameters,
)
from switchboard.telephony.twilio import (
    StreamStart,
    connect_stream_twiml,
    public_base,
    read_stream_start,
    signature_is_valid,
    verified_webhook_form,
    websocket_url,
)
from switchboard.telephony.twilio_call import TwilioStreamAdapter
from switchboard.telephony.twilio_rest import (
    RESUMED_AFTER_TRANSFER,
    WarmTransferWaits,
    transfer_status_router,
)
from switchboard.worker.browser_calls import WebRTCAnswerer
from switchboard.worker.calls import CallRegistry
from switchboard.worker.runner import CallEndedHook, run_call
from switchboard.worker.service import WorkerService
from switchboard.worker.slots import PoolSlot

MEDIA_PATH = "/twilio/media"


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


def create_worker_app(
    settings: Settings,
    agent: AgentConfig,
    service: WorkerService | None = None,
    *,
    on_call_ended: Sequence[CallEndedHook] = (),
) -> FastAPI:
    """Build the worker server; models load during start-up, before it reports ready.

    ``on_call_ended`` hooks run once per finished call of any ingress, with its record (the
    place for saving call records).
    """
    registry = service.calls if service is not None else CallRegistry()
    archive = CallArchive(settings, agent)
    if service is not None:
        service.archive = archive  # room jobs are recorded like every other call
    agents = AgentDirectory(agent, settings.agents_dir, reload_secs=settings.agents_reload_secs)
    if service is not None:
        service.agents = agents  # room jobs choose their agent like streamed calls do
    state = {"ready": False}
    standalone_calls: set[asyncio.Task] = set()
    answerer = (
        WebRTCAnswerer(
            service, settings, agent, calls=registry, on_ended=on_call_ended, archive=archive
        )
        if service is not None
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await asyncio.to_thread(warm_engines, settings, agents)
        await archive.start()
        if service is not None:
            await service.start()
        if answerer is not None:
            await answerer.start()
        state["ready"] = True
        logger.info(f"agent '{agent.name}' ready on port {settings.port}")
        yield
        state["ready"] = False
        if answerer is not None:
            await answerer.close()
        await archive.stop()

    # A worker is an internal listener: it describes its API to nobody.
    app = FastAPI(
        title="Switchboard worker", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    install_operator_keys(app, settings)
    # Twilio's callbacks (transfer reports) go to the public URL. In a pool that is the
    # orchestrators, which forward them to the worker holding the call: a pooled worker's own
    # address is internal (and the Host its streams arrive with is the edge's view of it).
    callback_url = settings.public_url

    def transfer_result(call_sid: str, outcome: TransferOutcome, form: dict[str, str]) -> None:
        record = registry.get(call_sid)
        if record is not None:
            record.transfer = {**(record.transfer or {}), "outcome": outcome.value}
            record.events.append({"event": "transfer_result", "outcome": outcome.value,
                                  "dial_status": form.get("DialCallStatus", "")})

    warm_waits = WarmTransferWaits()
    # In a pool an unanswered cold transfer goes back through the orchestrators to an agent.
    resume_url = f"{callback_url.rstrip('/')}{RESUME_PATH}" if service is not None and callback_url else None
    app.include_router(
        transfer_status_router(settings, callback_url, transfer_result, warm_waits, resume_url=resume_url)
    )

    async def drain() -> None:
        state["ready"] = False
        if answerer is not None:
            await answerer.stop()
        if service is not None:
            await service.drain()
        elif standalone_calls:
            logger.info(f"waiting for {len(standalone_calls)} live call(s)")
            await asyncio.wait(standalone_calls, timeout=settings.drain_timeout_secs)

    app.state.drain = drain

    @app.get("/health")
    async def health() -> Response:
        active = service.active if service else len(standalone_calls)
        body = {"status": "ok" if state["ready"] else "unavailable", "active_calls": active}
        if service is not None:
            body.update(worker_id=service.worker_id, draining=service.draining, capacity=settings.max_calls)
        agents.refresh()
        if agents.errors:
            body["agent_config_errors"] = sorted(agents.errors)
        return Response(json.dumps(body), status_code=200 if state["ready"] else 503, media_type="application/json")

    @app.get("/metrics", dependencies=[Depends(require_api_key)])
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/calls", dependencies=[Depends(require_caller_data_key)])
    async def calls() -> list[dict]:
        return [asdict(r) for r in registry.recent()]

    @app.get("/calls/{call_sid}", dependencies=[Depends(require_caller_data_key)])
    async def call(call_sid: str) -> dict:
        record = registry.get(call_sid)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no call {call_sid}")
        return asdict(record)

    limits = MediaLimits.from_settings(settings)

    async def serve_stream(websocket: WebSocket) -> tuple[MediaSocketGuard, StreamStart | None]:
        """Accept the socket under the media limits and read Twilio's start message (None if the
        peer never sent a valid one: the guard has closed the socket and counted why)."""
        await websocket.accept()
        socket = MediaSocketGuard(websocket, limits, transport="twilio")
        start = await read_stream_start(socket)
        if start is None:
            metrics.CONNECTION_ERRORS.labels(transport="twilio").inc()
        return socket, start

    if service is not None:

        @app.websocket(MEDIA_PATH + "/{token}")
        async def pooled_media(websocket: WebSocket, token: str) -> None:
            # Checked as the edge checks it (signature, expiry) plus its audience, and redeemed
            # for this hop: a token the edge let through opens one stream here, once.
            try:
                claims = await service.redemptions.admit(
                    settings.stream_secret.get_secret_value(), token, "worker", worker_id=service.worker_id
                )
            except stream_tokens.StreamTokenError as e:
                logger.warning(f"refusing media stream: {e}")
                await websocket.close(code=1008, reason=str(e))
                return
            except redis.RedisError as e:
                metrics.CONNECTION_ERRORS.labels(transport="redis").inc()
                logger.warning(f"refusing media stream: stream token not redeemable ({e})")
                await websocket.close(code=1011, reason="dispatch store unavailable")
                return
            with call_context(claims.call_id):
                # Tracked from here: a drain waits for it (and for streams on their way to it).
                task = asyncio.current_task()
                assert task is not None
                service.track_stream_call(task)
                # A slot reserved before a drain began is honoured: the orchestrator already
                # promised this call to us.
                reserved = await service.registry.confirm_reservation(service.worker_id, claims.call_id)
                if not reserved and (service.draining or not await service.registry.take_slot(service.worker_id)):
                    metrics.CALLS_REJECTED.labels(reason="worker_full").inc()
                    await websocket.close(code=1013, reason="worker has no free slot")
                    return
                slot = PoolSlot(service, claims.call_id)
                try:
                    await service.ledger.record(claims.call_id, CallStatus.RUNNING, worker=service.worker_id)
                    socket, start = await serve_stream(websocket)
                    # Out of drain time, the call goes on elsewhere: close with "service restart".
                    service.on_hand_off(task, lambda: setattr(socket, "end_code", CLOSE_HANDED_OFF))
                    if start is not None:
                        adapter = TwilioStreamAdapter(
                            socket, start, settings, call_id=claims.call_id,
                            callback_base=callback_url, warm_waits=warm_waits,
                        )
                        # Only a placement by /twilio/resume carries on what an earlier stream
                        # of the call left behind; any other stream starts the call afresh.
                        resumed = await service.sessions.load(claims.call_id) if claims.resume else None
                        answering = (resumed and agents.by_name(resumed.agent)) or agents.for_call(
                            start.custom_parameters
                        )
                        after = start.custom_parameters.get("ResumeAfter")
                        opening = answering.transfer_unanswered if after == RESUMED_AFTER_TRANSFER else None
                        await run_call(adapter, answering, settings, registry, slot=slot, on_ended=on_call_ended,
                                       archive=archive, sessions=service.sessions, worker_id=service.worker_id,
                                       resumed=resumed, opening=opening)
                finally:
                    await slot.release(None)  # a stream that never started; no-op after a call

    else:

        app.include_router(outbound_router(settings, require_caller_data_key))

        @app.post("/twilio/voice")
        async def twilio_voice(request: Request) -> Response:
            form, base = await verified_webhook_form(request, settings.public_url, settings.twilio_auth_token)
            if (machine := answering_machine_twiml(form, dict(request.query_params))) is not None:
                return Response(machine, media_type="application/xml")
            params = stream_parameters(form, dict(request.query_params))
            twiml = connect_stream_twiml(websocket_url(base, MEDIA_PATH), params)
            return Response(twiml, media_type="application/xml")

        @app.websocket(MEDIA_PATH)
        async def standalone_media(websocket: WebSocket) -> None:
            if settings.twilio_auth_token:
                url = websocket_url(public_base(websocket, settings.public_url), MEDIA_PATH)
                token = settings.twilio_auth_token.get_secret_value()
                if not signature_is_valid(token, url, {}, websocket.headers.get("X-Twilio-Signature")):
                    metrics.CONNECTION_ERRORS.labels(transport="twilio").inc()
                    await websocket.close(code=1008, reason="invalid X-Twilio-Signature")
                    return
            task = asyncio.current_task()
            assert task is not None
            standalone_calls.add(task)
            try:
                socket, start = await serve_stream(websocket)
                if start is not None:
                    with call_context(f"call-{start.call_sid or start.stream_sid}"):
                        adapter = TwilioStreamAdapter(
                            socket, start, settings, callback_base=public_base(websocket, callback_url),
                            warm_waits=warm_waits,
                        )
                        answering = agents.for_call(start.custom_parameters)
                        await run_call(adapter, answering, settings, registry, on_ended=on_call_ended,
                                       archive=archive)
            finally:
                standalone_calls.discard(task)

    return app
