"""Twilio media streams on a worker: each builds its adapter and ticket, then ``CallHost`` runs it.

In a pool (``switchboard worker``) streams arrive at ``/twilio/media/{token}``, relayed by the
orchestrators' media edge with a token from the orchestrator naming the call and this worker.
Standalone (``switchboard serve``) the worker also answers the Twilio webhook and takes streams
at ``/twilio/media``: one process, no Redis.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as redis
from fastapi import APIRouter, Request, Response, WebSocket
from loguru import logger

from switchboard.agent.directory import CallRoute
from switchboard.call.host import CallHost
from switchboard.call.ticket import CallTicket
from switchboard.call_ids import call_id_for_twilio
from switchboard.dispatch import stream_tokens
from switchboard.http.auth import require_caller_data_key
from switchboard.observability import metrics
from switchboard.observability.logging import call_context
from switchboard.settings import Settings
from switchboard.telephony.media_socket import MediaLimits, MediaSocketGuard
from switchboard.telephony.outbound import (
    answering_machine_twiml,
    outbound_router,
    stream_parameters,
)
from switchboard.telephony.twilio import (
    VOICE_PATH,
    StreamStart,
    connect_stream_twiml,
    public_base,
    read_stream_start,
    verified_webhook_form,
    websocket_is_signed,
    websocket_url,
)
from switchboard.telephony.twilio_call import TwilioStreamAdapter
from switchboard.telephony.twilio_rest import WarmTransferWaits
from switchboard.worker.service import WorkerService
from switchboard.worker.slots import PoolSlot

MEDIA_PATH = "/twilio/media"



def stream_server(settings: Settings):
    """Accept a socket under the media limits and read Twilio's start message (None if the peer
    never sent a valid one: the guard has closed the socket and counted why)."""
    limits = MediaLimits.from_settings(settings)

    async def serve_stream(websocket: WebSocket) -> tuple[MediaSocketGuard, StreamStart | None]:
        await websocket.accept()
        socket = MediaSocketGuard(websocket, limits, transport="twilio")
        start = await read_stream_start(socket)
        if start is None:
            metrics.CONNECTION_ERRORS.labels(transport="twilio").inc()
        return socket, start

    return serve_stream


async def _admitted(
    socket: MediaSocketGuard, service: WorkerService, secret: str, token: str, start: StreamStart
) -> bool:
    """Redeem the token for this hop, now that ``start`` says whose stream this is. The edge
    checked the call already; checked again as for every hop (a worker is one misconfigured
    firewall away from taking streams directly), and before redeeming: a token refused in
    another call's stream stays usable by its own."""
    try:
        await service.redemptions.admit(
            secret, token, "worker", worker_id=service.worker_id, call_sid=start.call_sid
        )
    except stream_tokens.StreamTokenError as e:
        logger.warning(f"refusing media stream: {e}")
        await socket.close(1008, str(e))
        return False
    except redis.RedisError as e:
        metrics.CONNECTION_ERRORS.labels(transport="redis").inc()
        logger.warning(f"refusing media stream: stream token not redeemable ({e})")
        await socket.close(1011, "dispatch store unavailable")
        return False
    return True


def stream_ticket(call_id: str, start: StreamStart, *, movable: bool, resumes: bool) -> CallTicket:
    """A Twilio stream's ticket: its agent by the stream parameters; ``movable`` in a pool (Twilio
    can bring it back to another worker), ``resumes`` when its placement says it comes back."""
    params = start.custom_parameters
    return CallTicket(
        call_id=call_id,
        route=CallRoute.of_stream(params),
        movable=movable,
        resumes=resumes,
        resume_after=params.get("ResumeAfter") if movable else None,
    )


def pooled_stream_router(
    settings: Settings,
    service: WorkerService,
    host: CallHost,
    *,
    callback_url: str | None,
    warm_waits: WarmTransferWaits,
) -> APIRouter:
    """``/twilio/media/{token}``: a stream the orchestrator placed on this worker."""
    router = APIRouter()
    serve_stream = stream_server(settings)

    @router.websocket(MEDIA_PATH + "/{token}")
    async def pooled_media(websocket: WebSocket, token: str) -> None:
        secret = settings.stream_secret.get_secret_value()
        # Checked as the edge checks it (signature, expiry) plus its audience before the socket
        # is accepted; redeemed for this hop once the stream's start names its call: a token
        # the edge let through opens one stream here, once.
        try:
            claims = service.redemptions.check(secret, token, "worker", worker_id=service.worker_id)
        except stream_tokens.StreamTokenError as e:
            logger.warning(f"refusing media stream: {e}")
            await websocket.close(code=1008, reason=str(e))
            return
        with call_context(claims.call_id):
            socket, start = await serve_stream(websocket)
            if start is None or not await _admitted(socket, service, secret, token, start):
                return
            # Tracked from here: a drain waits for it (and for streams on their way to it).
            task = asyncio.current_task()
            assert task is not None
            service.track_stream_call(task)
            # A slot reserved before a drain began is honoured: the orchestrator already
            # promised this call to us.
            reserved = await service.registry.confirm_reservation(service.worker_id, claims.call_id)
            if not reserved and (service.draining or not await service.registry.take_slot(service.worker_id)):
                metrics.CALLS_REJECTED.labels(reason="worker_full").inc()
                await socket.close(1013, "worker has no free slot")
                return
            slot = PoolSlot(service, claims.call_id)
            try:
                adapter = TwilioStreamAdapter(
                    socket, start, settings, call_id=claims.call_id,
                    callback_base=callback_url, warm_waits=warm_waits,
                )
                # Only a placement by /twilio/resume carries on what an earlier stream of the
                # call left behind; any other stream starts the call afresh.
                ticket = stream_ticket(claims.call_id, start, movable=True, resumes=claims.resume)
                await host.run(ticket, adapter, slot=slot)
            finally:
                await slot.release(None)  # a call that never ran; no-op after a call

    return router


def standalone_stream_router(
    settings: Settings,
    host: CallHost,
    live: set[asyncio.Task],
    *,
    callback_url: str | None,
    warm_waits: WarmTransferWaits,
) -> APIRouter:
    """``/twilio/voice`` and ``/twilio/media`` (and outbound calls) of a worker on its own;
    ``live`` holds the running calls, for the drain."""
    router = APIRouter()
    serve_stream = stream_server(settings)
    router.include_router(outbound_router(settings, require_caller_data_key))

    @router.post(VOICE_PATH)
    async def twilio_voice(request: Request) -> Response:
        form, base = await verified_webhook_form(request, settings.public_url, settings.twilio_auth_token)
        if (machine := answering_machine_twiml(form, dict(request.query_params))) is not None:
            return Response(machine, media_type="application/xml")
        params = stream_parameters(form, dict(request.query_params))
        twiml = connect_stream_twiml(websocket_url(base, MEDIA_PATH), params)
        return Response(twiml, media_type="application/xml")

    @router.websocket(MEDIA_PATH)
    async def standalone_media(websocket: WebSocket) -> None:
        if not websocket_is_signed(websocket, settings.public_url, settings.twilio_auth_token, MEDIA_PATH):
            metrics.CONNECTION_ERRORS.labels(transport="twilio").inc()
            await websocket.close(code=1008, reason="invalid X-Twilio-Signature")
            return
        task = asyncio.current_task()
        assert task is not None
        live.add(task)
        try:
            socket, start = await serve_stream(websocket)
            if start is not None:
                adapter = TwilioStreamAdapter(
                    socket, start, settings, callback_base=public_base(websocket, callback_url),
                    warm_waits=warm_waits,
                )
                call_id = call_id_for_twilio(start.call_sid or start.stream_sid)
                await host.run(stream_ticket(call_id, start, movable=False, resumes=False), adapter)
        finally:
            live.discard(task)

    return router
