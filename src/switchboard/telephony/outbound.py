"""Outbound calls: ``POST /calls`` places one through Twilio or LiveKit, and the agent answers.

The ingress is the request's ``ingress`` if it names one, else ``SWITCHBOARD_OUTBOUND_INGRESS``
(default ``twilio``).

Twilio: the call is created with the REST API (the ``twilio`` SDK) pointing ``Url`` at our own
``/twilio/voice?agent=NAME`` webhook, with answering-machine detection on. When the callee picks
up, Twilio posts that webhook like an inbound call (plus ``AnsweredBy``): a person gets the
named agent over a media stream, exactly as an inbound caller would; a machine gets the
request's ``voicemail`` message after the beep (or a plain hang-up without one).

LiveKit (orchestrators only: the agent joins by a room job): see
:mod:`switchboard.telephony.livekit_outbound`. LiveKit has no answering-machine detection, so
``voicemail`` is refused there and ``machine_detection`` does not apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal
from urllib.parse import urlencode

import aiohttp
from fastapi import APIRouter, Depends, HTTPException, Request
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.twiml.voice_response import VoiceResponse

from switchboard.http.auth import KeyFirstRoute
from switchboard.observability import metrics
from switchboard.settings import Settings
from switchboard.telephony.livekit_outbound import RoomJobs, place_livekit_call
from switchboard.telephony.twilio import VOICE_PATH, public_base
from switchboard.telephony.twilio_rest import rest_client

_E164 = r"^\+[1-9][0-9]{7,14}$"


class OutboundCall(BaseModel):
    """``POST /calls``: whom to call, from which number, with which agent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    version: int = Field(1, ge=1, le=1)
    to: str = Field(pattern=_E164, description="The number to call (E.164)")
    from_: str | None = Field(
        None,
        alias="from",
        pattern=_E164,
        description="Caller ID; default SWITCHBOARD_OUTBOUND_FROM",
    )
    agent: str | None = Field(None, min_length=1, max_length=200, description="Agent name")
    voicemail: str | None = Field(
        None, min_length=1, max_length=500, description="Left after the beep if a machine answers"
    )
    machine_detection: bool = Field(True, description="Twilio only: answering-machine detection")
    ingress: Literal["twilio", "livekit"] | None = Field(
        None, description="How to place the call; default SWITCHBOARD_OUTBOUND_INGRESS"
    )


def stream_parameters(form: dict[str, str], query: dict[str, str]) -> dict[str, str]:
    """The ``<Stream>`` parameters a voice webhook passes to the agent."""
    params = {k: form[k] for k in ("CallSid", "From", "To", "Direction") if k in form}
    if query.get("agent"):
        params["Agent"] = query["agent"]
    return params


def answering_machine_twiml(form: dict[str, str], query: dict[str, str]) -> str | None:
    """For an outbound call a machine answered: leave the voicemail, or hang up. Else None."""
    answered_by = form.get("AnsweredBy", "")
    if not answered_by.startswith(("machine", "fax")):
        if answered_by:
            metrics.OUTBOUND_CALLS.labels(result="human").inc()
        return None
    response = VoiceResponse()
    voicemail = query.get("voicemail")
    if voicemail and answered_by != "fax":
        response.say(voicemail)
    response.hangup()
    metrics.OUTBOUND_CALLS.labels(result="voicemail" if voicemail else "machine").inc()
    logger.info(f"outbound call {form.get('CallSid', '')}: answered by {answered_by}")
    return str(response)


def outbound_router(
    settings: Settings, require_api_key: Callable[..., None], rooms: RoomJobs | None = None
) -> APIRouter:
    """``POST /calls`` (``X-API-Key``): place an outbound call through Twilio or LiveKit
    (``rooms``: where LiveKit calls' agent jobs go; None where there is no queue)."""
    router = APIRouter(route_class=KeyFirstRoute)  # a stranger's body is not even read

    @router.post("/calls", status_code=201, dependencies=[Depends(require_api_key)])
    async def place_call(body: OutboundCall, request: Request) -> dict:
        if (body.ingress or settings.outbound_ingress) == "livekit":
            if body.voicemail:
                raise HTTPException(
                    422, "voicemail: LiveKit calls have no answering-machine detection"
                )
            return await place_livekit_call(
                settings, rooms, to=body.to, caller_id=body.from_ or settings.outbound_from,
                agent=body.agent,
            )  # fmt: skip
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            raise HTTPException(503, "outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        caller_id = body.from_ or settings.outbound_from
        if caller_id is None:
            raise HTTPException(
                422, "from: no caller ID given and SWITCHBOARD_OUTBOUND_FROM is unset"
            )
        query = {k: v for k, v in (("agent", body.agent), ("voicemail", body.voicemail)) if v}
        url = f"{public_base(request, settings.public_url)}{VOICE_PATH}"
        url += f"?{urlencode(query)}" if query else ""
        options = {"machine_detection": "DetectMessageEnd"} if body.machine_detection else {}
        try:
            async with AsyncTwilioHttpClient(
                timeout=settings.provider_connect_timeout_secs * 5
            ) as http:
                call = await rest_client(settings, http).calls.create_async(
                    to=body.to, from_=caller_id, url=url, **options
                )
        except TwilioRestException as e:
            metrics.OUTBOUND_CALLS.labels(result="refused").inc()
            raise HTTPException(502, f"Twilio refused the call: {e.code} {e.msg}") from e
        except (TwilioException, aiohttp.ClientError, TimeoutError, OSError) as e:
            metrics.OUTBOUND_CALLS.labels(result="error").inc()
            raise HTTPException(502, f"Twilio could not be reached: {type(e).__name__}") from e
        metrics.OUTBOUND_CALLS.labels(result="placed").inc()
        logger.info(
            f"outbound call {call.sid} placed to {body.to[:-4]}**** with agent {body.agent}"
        )
        return {"call_sid": call.sid, "status": call.status, "agent": body.agent}

    return router
