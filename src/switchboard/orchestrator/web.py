"""The orchestrator's web pages: the browser phone (``/``), the operations page (``/dashboard``),
the call history (``/history``, reading the ``/calls`` API with the operator key)
and the WebRTC call set-up behind the phone (``POST /webrtc/offer``).

The pages are static files shipped in the package (no CDN); the operations page reads
``GET /stats``. An offer is checked (400 if it is no audio offer), holds a place under the browser
cap of the worker with the most free slots that has one (``WorkerRegistry.reserve_browser``),
travels through Redis to that worker (``telephony.webrtc_signalling``) and comes back as its SDP
answer; media then flows directly between the browser and the worker, which takes a pool slot
only once the peer connection is up.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

import redis.asyncio as redis
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from loguru import logger
from pydantic import BaseModel, Field

from switchboard.call_ids import new_call_id
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.models import CallStatus
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.http.auth import KeyFirstRoute, require_api_key
from switchboard.observability import metrics
from switchboard.settings import Settings
from switchboard.telephony.webrtc_signalling import (
    ANSWER_TIMEOUT_SECS,
    MAX_SDP_CHARS,
    AnswerTimeout,
    OfferRelay,
    offer_sdp_problem,
)

NO_AGENT_FREE = "no agent is free"
WEB_DIR = resources.files("switchboard") / "web"
_PAGES = {"/": "phone.html", "/dashboard": "dashboard.html", "/history": "calls.html"}
# The phone is public; the operations page is the operator's. The Calls page holds no data of
# its own: it asks for the key and every call record behind it needs one.
_OPERATOR_PAGES = {"/dashboard"}
_ASSETS = {
    "style.css": "text/css; charset=utf-8",
    "phone.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "calls.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
# Pages are tiny; revalidating each time means an upgrade never leaves an old script running.
_NO_CACHE = {"Cache-Control": "no-cache"}
# A placed offer's hold covers its trip to the worker; the worker then extends it to its own
# connect deadline when it answers.
_OFFER_HOLD_SECS = ANSWER_TIMEOUT_SECS + 5


class WebRTCOffer(BaseModel):
    """The browser's SDP offer, with every ICE candidate already in it."""

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    type: Literal["offer"]


def _error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


def create_web_router(
    settings: Settings, client: redis.Redis, registry: WorkerRegistry
) -> APIRouter:
    """Routes for the two pages, their assets and WebRTC offers."""
    router = APIRouter(route_class=KeyFirstRoute)
    relay = OfferRelay(client)
    ledger = CallLedger(client, settings.call_state_ttl_secs)

    def page(name: str):
        async def serve_page() -> HTMLResponse:
            return HTMLResponse((WEB_DIR / name).read_text(encoding="utf-8"), headers=_NO_CACHE)

        return serve_page

    for path, name in _PAGES.items():
        guard = [Depends(require_api_key)] if path in _OPERATOR_PAGES else []
        router.add_api_route(path, page(name), methods=["GET"], include_in_schema=False, dependencies=guard)

    @router.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(status_code=404, detail=f"no asset {name}")
        return Response((WEB_DIR / name).read_bytes(), media_type=_ASSETS[name], headers=_NO_CACHE)

    @router.post("/webrtc/offer")
    async def webrtc_offer(offer: WebRTCOffer) -> JSONResponse:
        if (problem := offer_sdp_problem(offer.sdp)) is not None:
            metrics.CONNECTION_ERRORS.labels(transport="webrtc").inc()
            return _error(400, problem)
        call_id = new_call_id("webrtc")
        try:
            worker_id = await registry.reserve_browser(call_id, _OFFER_HOLD_SECS)
        except redis.RedisError as e:
            logger.error(f"{call_id}: redis unreachable, cannot place a browser call: {e}")
            return _error(503, "the call service is unavailable, please try again shortly")
        if worker_id is None:
            metrics.CALLS_REJECTED.labels(reason="no_capacity").inc()
            await ledger.record(
                call_id, CallStatus.REJECTED, reason="no_capacity", transport="webrtc"
            )
            logger.warning(f"{call_id}: no worker has a free slot for a browser call")
            return _error(503, NO_AGENT_FREE)
        await ledger.record(call_id, CallStatus.RESERVED, worker=worker_id, transport="webrtc")
        try:
            answer = await relay.request_answer(worker_id, call_id, offer.sdp)
        except AnswerTimeout as e:
            metrics.CONNECTION_ERRORS.labels(transport="webrtc").inc()
            if e.withdrawn:  # the worker never saw it; otherwise the worker releases the hold
                await registry.release_browser(worker_id, call_id)
            await ledger.finish(call_id, CallStatus.FAILED)
            logger.warning(f"{call_id}: {e}")
            return _error(504, "the agent did not pick up, please try again")
        if answer.error or not answer.sdp:
            # The worker counted its refusal (calls_rejected_total or connection_errors_total).
            await ledger.record(call_id, CallStatus.REJECTED, reason=answer.error or "no answer")
            logger.warning(f"{call_id}: worker {worker_id} refused the call: {answer.error}")
            return _error(503, NO_AGENT_FREE)
        logger.info(f"{call_id}: browser call answered by {worker_id}")
        return JSONResponse(
            {"sdp": answer.sdp, "type": answer.type, "pc_id": answer.pc_id, "call_id": call_id}
        )

    return router
