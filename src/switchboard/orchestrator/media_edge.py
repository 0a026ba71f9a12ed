"""The media edge: Twilio's media streams enter here and are relayed to the worker holding the call.

Workers listen on internal addresses only. Twilio opens ``wss://<public>/twilio/media`` on any
orchestrator; the edge reads the first messages (``connected``, then ``start``, whose
``customParameters`` carry the stream token), checks the token before a byte goes further,
looks up the internal address of the worker the token names (Redis), opens a WebSocket to it
and from then on copies frames both ways without parsing them. Closing either side closes the
other with the same code. The edge keeps nothing but the live sockets, so any number of
orchestrators behind a load balancer can take any stream.

How the worker's side closed decides what Twilio's ``<Redirect>`` after the stream finds: a
worker that ends the call closes normally, and the edge marks the call's session ended before
Twilio hears of it (the redirect hangs up); a worker that died (connection lost) or
handed the call off (1012: draining, or transferred) leaves the session open, and the redirect places the call on
another worker (:mod:`switchboard.orchestrator.placement`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from loguru import logger
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from switchboard.dispatch import stream_tokens
from switchboard.dispatch.redemptions import StreamRedemptions
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.dispatch.sessions import CallSessions
from switchboard.observability import metrics
from switchboard.observability.logging import call_context
from switchboard.settings import Settings
from switchboard.telephony.media_socket import CLOSE_HANDED_OFF, MediaRejected
from switchboard.telephony.twilio import parse_start, websocket_is_signed, websocket_url

EDGE_PATH = "/twilio/media"  # public: where Twilio connects
WORKER_MEDIA_PATH = "/twilio/media"  # internal: the worker's ``/twilio/media/{token}``
STREAM_TOKEN_PARAM = "streamToken"  # the <Parameter> that carries the token

# Twilio sends `connected` then `start` (a few hundred bytes); anything else first is not Twilio.
_MAX_MESSAGES_BEFORE_START = 4
_MAX_START_BYTES = 16 * 1024
# The internal hop's keepalive: notices a worker host that vanished without closing TCP.
_WORKER_PING_SECS = 10.0
_WORKER_CLOSE_TIMEOUT_SECS = 2.0
# Codes a peer reports but that may not be sent in a close frame (RFC 6455 7.4.1): 1005 is a
# close frame without a code (a normal close), 1006 / 1015 a connection lost without one.
_NO_STATUS = 1005
_UNSENDABLE = {1005, 1006, 1015}
CALLER_LEFT_CODE = 1001  # the caller's TCP dropped without a close frame: "going away"
WORKER_LOST_CODE = 1011  # the worker's connection died (killed, host gone): "internal error"
# Worker closes after which the call goes on elsewhere; any other close ended the call.
_CALL_GOES_ON = {CALLER_LEFT_CODE, WORKER_LOST_CODE, CLOSE_HANDED_OFF, 1013}


class _Refused(Exception):
    """The stream cannot be relayed: close the caller's socket with ``code`` (None: it is gone)."""

    def __init__(self, code: int | None, reason: str, result: str):
        super().__init__(reason)
        self.code, self.reason, self.result = code, reason, result


class Relays:
    """The streams this process is relaying, so that a stopping orchestrator lets them finish."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()
        self.draining = False

    async def drain(self, limit_secs: float) -> None:
        """Report not ready (the load balancer stops sending new calls here) and wait up to
        ``limit_secs`` for the live streams to end; the server closes what is left (1012)."""
        self.draining = True
        if self.tasks:
            logger.info(
                f"media edge draining: {len(self.tasks)} live stream(s), up to {limit_secs:.0f} s"
            )
            await asyncio.wait(set(self.tasks), timeout=limit_secs)


def create_media_edge_router(
    settings: Settings,
    registry: WorkerRegistry,
    relays: Relays,
    sessions: CallSessions,
    redemptions: StreamRedemptions,
) -> APIRouter:
    """The ``/twilio/media`` WebSocket of the public tier."""
    router = APIRouter()
    secret = settings.stream_secret.get_secret_value()

    @router.websocket(EDGE_PATH)
    async def media_edge(websocket: WebSocket) -> None:
        task = asyncio.current_task()
        assert task is not None
        relays.tasks.add(task)
        try:
            await _serve_stream(websocket)
        finally:
            relays.tasks.discard(task)

    async def _serve_stream(websocket: WebSocket) -> None:
        if not websocket_is_signed(websocket, settings.public_url, settings.twilio_auth_token, EDGE_PATH):
            metrics.MEDIA_EDGE_STREAMS.labels(result="bad_signature").inc()
            await websocket.close(code=1008, reason="invalid X-Twilio-Signature")
            return
        await websocket.accept()
        try:
            first, token, call_sid = await _read_until_start(websocket, settings.media_start_timeout_secs)
            claims = await _redeem_token(secret, token, call_sid, redemptions)
        except _Refused as refused:
            await _refuse(websocket, refused)
            return
        with call_context(claims.call_id):
            try:
                worker = await _open_worker_hop(registry, claims.worker_id, token, settings)
            except _Refused as refused:
                await _refuse(websocket, refused)
                return
            metrics.MEDIA_EDGE_STREAMS.labels(result="relayed").inc()
            metrics.MEDIA_EDGE_ACTIVE.inc()
            try:
                for text in first:
                    await worker.send(text)

                async def worker_closed(code: int) -> None:
                    if code not in _CALL_GOES_ON:
                        await _mark_ended(sessions, claims.call_id, code)

                side, code = await relay(websocket, worker, on_worker_closed=worker_closed)
                metrics.MEDIA_EDGE_CLOSES.labels(side=side, code=str(code)).inc()
                logger.info(
                    f"media edge: {side} closed the stream ({code}) to worker {claims.worker_id}"
                )
            except ConnectionClosed:
                # The worker went away while we handed it the first messages.
                await _close_caller(websocket, WORKER_LOST_CODE, "worker connection lost")
                metrics.MEDIA_EDGE_CLOSES.labels(side="worker", code=str(WORKER_LOST_CODE)).inc()
            finally:
                metrics.MEDIA_EDGE_ACTIVE.dec()
                await worker.close()

    return router


async def _read_until_start(websocket: WebSocket, limit_secs: float) -> tuple[list[str], str, str]:
    """The raw messages up to and including ``start``, the stream token in it and its call's
    ``callSid``."""
    received: list[str] = []
    try:
        async with asyncio.timeout(limit_secs):
            while len(received) < _MAX_MESSAGES_BEFORE_START:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    raise _Refused(None, "caller left before start", "no_start")
                text = message.get("text")
                if text is None:
                    raise _Refused(1008, "binary frame before start", "no_start")
                if len(text) > _MAX_START_BYTES:
                    raise _Refused(1009, "message before start too big", "no_start")
                received.append(text)
                try:
                    parsed = json.loads(text)
                except json.JSONDecodeError as e:
                    raise _Refused(1008, "message before start is not JSON", "no_start") from e
                if isinstance(parsed, dict) and parsed.get("event") == "start":
                    return received, *_token_of(parsed)
    except TimeoutError as e:
        raise _Refused(
            1008, f"no start message within {limit_secs:.0f} s", "no_start"
        ) from e
    raise _Refused(1008, "no start message", "no_start")


def _token_of(start_message: dict) -> tuple[str, str]:
    """The stream token of a ``start`` message and the ``callSid`` it must be for."""
    try:
        start = parse_start(start_message)
    except MediaRejected as e:
        raise _Refused(e.code, str(e), "bad_token") from e
    token = start.custom_parameters.get(STREAM_TOKEN_PARAM)
    if not token:
        raise _Refused(1008, f"start without customParameters.{STREAM_TOKEN_PARAM}", "bad_token")
    return token, start.call_sid


async def _redeem_token(
    secret: str, token: str, call_sid: str, redemptions: StreamRedemptions
) -> stream_tokens.StreamClaims:
    """Check the token (for this stream's call) and redeem it for this hop: a token opens one
    stream, once."""
    try:
        return await redemptions.admit(secret, token, "edge", call_sid=call_sid)
    except stream_tokens.StreamTokenError as e:
        result = "token_reused" if e.reason == "reused" else "bad_token"
        raise _Refused(1008, str(e), result) from e
    except redis.RedisError as e:
        # Unredeemed, a token could open any number of streams: refuse rather than guess.
        metrics.CONNECTION_ERRORS.labels(transport="redis").inc()
        raise _Refused(WORKER_LOST_CODE, "dispatch store unavailable", "store_unavailable") from e


async def _open_worker_hop(
    registry: WorkerRegistry, worker_id: str, token: str, settings: Settings
) -> ClientConnection:
    try:
        base = await registry.media_url(worker_id)
    except redis.RedisError as e:
        metrics.CONNECTION_ERRORS.labels(transport="redis").inc()
        raise _Refused(WORKER_LOST_CODE, "dispatch store unavailable", "worker_unreachable") from e
    if base is None:
        raise _Refused(WORKER_LOST_CODE, "the call's worker is gone", "worker_gone")
    started = time.perf_counter()
    try:
        worker = await connect(
            websocket_url(base, f"{WORKER_MEDIA_PATH}/{token}"),
            compression=None,  # audio frames do not deflate; it would only cost CPU on both ends
            proxy=None,  # the internal hop never goes through an outbound proxy
            open_timeout=settings.media_edge_connect_timeout_secs,
            close_timeout=_WORKER_CLOSE_TIMEOUT_SECS,
            ping_interval=_WORKER_PING_SECS,
            ping_timeout=_WORKER_PING_SECS,
        )
    except InvalidStatus as e:
        # A worker turns a stream away (full, draining, token not for it) before accepting it.
        status = e.response.status_code
        raise _Refused(1013, f"worker refused the stream (HTTP {status})", "worker_refused") from e
    except (OSError, TimeoutError, WebSocketException) as e:
        metrics.CONNECTION_ERRORS.labels(transport="media_edge").inc()
        raise _Refused(WORKER_LOST_CODE, "worker unreachable", "worker_unreachable") from e
    metrics.MEDIA_EDGE_CONNECT_MS.observe((time.perf_counter() - started) * 1000)
    return worker


async def relay(
    caller: WebSocket,
    worker: ClientConnection,
    *,
    on_worker_closed: Callable[[int], Awaitable[None]] | None = None,
) -> tuple[str, int]:
    """Copy frames both ways until one side closes; close the other with its code.

    ``on_worker_closed(code)`` runs when the worker side closed, before the caller is told.
    Returns which side closed first (``caller`` | ``worker``) and the code passed on.
    """
    up = asyncio.create_task(_caller_to_worker(caller, worker), name="edge-up")
    down = asyncio.create_task(_worker_to_caller(worker, caller), name="edge-down")
    try:
        done, _pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if up in done and up.result() is not None:
            return "caller", up.result()  # the worker hop is closed with the caller's code
        # The worker hop closed (or broke under a send): its close code goes to the caller.
        try:
            code, reason = await asyncio.wait_for(down, _WORKER_CLOSE_TIMEOUT_SECS)
        except TimeoutError:
            code, reason = WORKER_LOST_CODE, "worker connection lost"
        if on_worker_closed is not None:
            await on_worker_closed(code)
        await _close_caller(caller, code, reason)
        return "worker", code
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


async def _caller_to_worker(caller: WebSocket, worker: ClientConnection) -> int | None:
    """Frames from Twilio to the worker. Returns the code it closed the worker hop with when the
    caller left; None if the worker hop broke first (the other direction reports that)."""
    try:
        while True:
            try:
                message = await caller.receive()
            except (RuntimeError, OSError):
                message = {"type": "websocket.disconnect", "code": 1006}
            if message["type"] == "websocket.disconnect":
                code = message.get("code") or 1000
                # uvicorn reports a lost connection as 1005 too, so every unsendable code
                # (no code, connection lost) reaches the worker as "going away".
                sendable = CALLER_LEFT_CODE if code in _UNSENDABLE else code
                await worker.close(sendable, _short(message.get("reason") or ""))
                return sendable
            text = message.get("text")
            await worker.send(text if text is not None else message.get("bytes") or b"")
    except WebSocketException:  # closed under a send, or a code the worker hop cannot carry
        return None


async def _worker_to_caller(worker: ClientConnection, caller: WebSocket) -> tuple[int, str]:
    """Frames from the worker to Twilio, until the worker hop closes: its code and reason."""
    try:
        async for frame in worker:
            if isinstance(frame, str):
                await caller.send({"type": "websocket.send", "text": frame})
            else:
                await caller.send({"type": "websocket.send", "bytes": frame})
    except ConnectionClosed:
        pass
    except (WebSocketDisconnect, RuntimeError, OSError):
        # The caller is gone; the other direction sees its disconnect and closes the worker.
        await asyncio.Event().wait()
    received = worker.protocol.close_rcvd
    if received is None or received.code in _UNSENDABLE - {_NO_STATUS}:
        return WORKER_LOST_CODE, "worker connection lost"
    return (1000 if received.code == _NO_STATUS else received.code), received.reason


async def _mark_ended(sessions: CallSessions, call_id: str, code: int) -> None:
    try:
        await sessions.end(call_id, f"worker closed the stream ({code})")
    except redis.RedisError as e:
        # Twilio's redirect will then place the call again, and that worker ends it at once.
        metrics.CONNECTION_ERRORS.labels(transport="redis").inc()
        logger.warning(f"could not mark the call ended: {e}")


async def _refuse(websocket: WebSocket, refused: _Refused) -> None:
    metrics.MEDIA_EDGE_STREAMS.labels(result=refused.result).inc()
    if refused.result in ("worker_gone", "worker_unreachable"):
        # The call was placed on a worker that died before its stream arrived (runbook: worker_lost).
        metrics.CALLS_REJECTED.labels(reason="worker_lost").inc()
    logger.warning(f"media edge refused a stream: {refused.reason}")
    if refused.code is not None:
        await _close_caller(websocket, refused.code, refused.reason)


def _short(reason: str) -> str:
    """A close reason that fits a close frame (123 bytes of UTF-8)."""
    return reason.encode()[:120].decode(errors="ignore")


async def _close_caller(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code=code, reason=_short(reason))
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass  # the caller is gone already
