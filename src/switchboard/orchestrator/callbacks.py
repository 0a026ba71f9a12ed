"""Twilio's per-call callbacks on the public tier, forwarded to the worker holding the call.

Workers are internal, so a callback Twilio makes about one call (a transfer's ``<Dial action>``
report, a warm transfer's status callbacks) reaches an orchestrator. It checks the signature, finds the worker the call was placed
on (``sb:call:{id}`` → ``worker``, then that worker's registered internal URL) and forwards the
request unchanged: body, query and ``X-Twilio-Signature``, so the worker, configured with the same
``SWITCHBOARD_PUBLIC_URL``, verifies the very URL Twilio signed.
"""

from __future__ import annotations

import httpx
import redis.asyncio as redis
from fastapi import APIRouter, Request, Response
from loguru import logger
from twilio.twiml.voice_response import VoiceResponse

from switchboard.call_ids import call_id_for_twilio
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.observability import metrics
from switchboard.settings import Settings
from switchboard.telephony.twilio import verified_webhook_form
from switchboard.telephony.twilio_rest import TRANSFER_STATUS_PATH, WARM_STATUS_PATH

FORWARD_TIMEOUT_SECS = 5.0  # Twilio waits ~15 s for a callback's TwiML
_FORWARDED_HEADERS = ("content-type", "x-twilio-signature")


def create_callback_router(
    settings: Settings, registry: WorkerRegistry, ledger: CallLedger
) -> APIRouter:
    router = APIRouter()

    async def forward(request: Request) -> Response:
        body = await request.body()  # first: the form is then parsed from it, and it is forwarded
        await verified_webhook_form(request, settings.public_url, settings.twilio_auth_token)
        call_sid = request.query_params.get("call", "")
        base = await _worker_url(registry, ledger, call_id_for_twilio(call_sid)) if call_sid else None
        if base is None:
            logger.warning(f"transfer report for call {call_sid or '?'}: no live worker holds it")
            return _hang_up()
        url = f"{base}{request.url.path}?{request.url.query}"
        headers = {k: v for k in _FORWARDED_HEADERS if (v := request.headers.get(k)) is not None}
        try:
            async with httpx.AsyncClient(timeout=FORWARD_TIMEOUT_SECS, trust_env=False) as client:
                answer = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            metrics.CONNECTION_ERRORS.labels(transport="callback_forward").inc()
            logger.warning(f"transfer report for call {call_sid}: worker unreachable ({e!r})")
            return _hang_up()
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    for path in (TRANSFER_STATUS_PATH, WARM_STATUS_PATH):  # both name the call in ?call=
        router.add_api_route(path, forward, methods=["POST"])
    return router


async def _worker_url(registry: WorkerRegistry, ledger: CallLedger, call_id: str) -> str | None:
    try:
        worker_id = (await ledger.get(call_id)).get("worker")
        return await registry.media_url(worker_id) if worker_id else None
    except redis.RedisError:
        metrics.CONNECTION_ERRORS.labels(transport="redis").inc()
        return None


def _hang_up() -> Response:
    """The worker's own answer is TwiML too; without it, the call just ends."""
    response = VoiceResponse()
    response.hangup()
    return Response(str(response), media_type="application/xml")
