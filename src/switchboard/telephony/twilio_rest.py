"""Twilio call control over the REST API (the ``twilio`` SDK): transfer by ``<Dial>`` TwiML.

A media stream cannot move a call by itself (pipecat#1554): the call is redirected with the
REST API's call update, whose new TwiML ``<Dial>``s the target. Twilio ends our
``<Connect><Stream>`` and rings the target; when the dial ends it posts ``DialCallStatus`` to
the ``<Dial action>`` URL, served by :func:`transfer_status_router`, which records and counts
the outcome. ``SWITCHBOARD_TWILIO_API_URL`` points the SDK (and the serializer's hang-up) at
another host, such as ``switchboard emulate twilio``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import quote

import aiohttp
from fastapi import APIRouter, Request, Response
from loguru import logger
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from switchboard.agent.config import valid_transfer_target
from switchboard.observability import metrics
from switchboard.settings import Settings
from switchboard.telephony.base import Brief, CallControl, TransferOutcome, UnsupportedOperation
from switchboard.telephony.twilio import SwitchboardTwilioSerializer, verified_webhook_form

TRANSFER_STATUS_PATH = "/twilio/transfer-status"
# ``/twilio/resume?after=transfer_unanswered``: the call comes back to an agent after a transfer
# nobody answered; the stream parameter ``ResumeAfter`` tells the agent why.
RESUME_AFTER_PARAM = "after"
RESUMED_AFTER_TRANSFER = "transfer_unanswered"
WARM_STATUS_PATH = "/twilio/warm-status"
_WARM_STATUSES = {
    "in-progress": TransferOutcome.ANSWERED,
    "answered": TransferOutcome.ANSWERED,
    "busy": TransferOutcome.BUSY,
    "no-answer": TransferOutcome.NO_ANSWER,
    "failed": TransferOutcome.FAILED,
    "canceled": TransferOutcome.FAILED,
    "completed": TransferOutcome.NO_ANSWER,  # ended before it was answered (else resolved already)
}
UNANSWERED_LINE = "Sorry, nobody could take your call right now. Please try again later. Goodbye."
_DIAL_OUTCOMES = {
    "completed": TransferOutcome.ANSWERED,
    "answered": TransferOutcome.ANSWERED,
    "busy": TransferOutcome.BUSY,
    "no-answer": TransferOutcome.NO_ANSWER,
    "failed": TransferOutcome.FAILED,
    "canceled": TransferOutcome.FAILED,
}


def dial_twiml(target: str, *, action: str | None, ring_secs: int, say: str | None = None) -> str:
    """TwiML that rings ``target`` (a number or ``sip:`` URI) and reports to ``action``, after
    saying ``say`` if given."""
    response = VoiceResponse()
    if say:
        response.say(say)
    dial = (
        Dial(action=action, method="POST", timeout=ring_secs) if action else Dial(timeout=ring_secs)
    )
    if target.startswith(("sip:", "sips:")):
        dial.sip(target)
    else:
        dial.number(target)
    response.append(dial)
    return str(response)


def rest_client(settings: Settings, http_client: AsyncTwilioHttpClient) -> Client:
    """A ``twilio`` SDK client on the configured API host."""
    assert settings.twilio_account_sid and settings.twilio_auth_token
    client = Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token.get_secret_value(),
        http_client=http_client,
    )
    client.api.base_url = settings.twilio_api_url.rstrip("/")
    return client


def conference_twiml(room: str, *, say: str | None = None) -> str:
    """TwiML joining a conference (ending it when this leg leaves), after an optional line."""
    response = VoiceResponse()
    if say:
        response.say(say)
    dial = Dial()
    dial.conference(room, end_conference_on_exit=True, beep=False)
    response.append(dial)
    return str(response)


class WarmTransferWaits:
    """Warm transfers waiting for the person's call to be answered, by the caller's CallSid."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[TransferOutcome]] = {}

    def expect(self, call_sid: str) -> asyncio.Future[TransferOutcome]:
        future: asyncio.Future[TransferOutcome] = asyncio.get_running_loop().create_future()
        self._waiting[call_sid] = future
        return future

    def forget(self, call_sid: str) -> None:
        self._waiting.pop(call_sid, None)

    def report(self, call_sid: str, status: str) -> bool:
        """Twilio's status callback for the person's call; True if a transfer was waiting."""
        future = self._waiting.get(call_sid)
        outcome = _WARM_STATUSES.get(status)
        if future is None or future.done() or outcome is None:
            return False
        future.set_result(outcome)
        return True


class TwilioCallControl(CallControl):
    """Transfers one Twilio call; needs ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN``."""

    def __init__(
        self,
        settings: Settings,
        call_sid: str,
        serializer: SwitchboardTwilioSerializer,
        *,
        status_url: str | None,
        warm: tuple[WarmTransferWaits, str] | None = None,
        caller_id: str | None = None,
    ):
        """``warm``: where answers are reported and the status-callback URL for warm transfers;
        ``caller_id``: the number the person sees (the number the caller dialed)."""
        self._settings = settings
        self._call_sid = call_sid
        self._serializer = serializer
        self._status_url = status_url
        self._warm = warm
        self._caller_id = caller_id or settings.outbound_from

    async def transfer(self, target: str) -> TransferOutcome:
        settings = self._settings
        if not (settings.twilio_account_sid and settings.twilio_auth_token and self._call_sid):
            raise UnsupportedOperation(
                "transfers need TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and a CallSid"
            )
        if not valid_transfer_target(target):
            return TransferOutcome.INVALID_TARGET
        twiml = dial_twiml(target, action=self._status_url, ring_secs=settings.transfer_ring_secs)
        try:
            async with AsyncTwilioHttpClient(
                timeout=settings.provider_connect_timeout_secs * 5
            ) as http:
                client = rest_client(settings, http)
                await client.calls(self._call_sid).update_async(twiml=twiml)
        except TwilioRestException as e:
            logger.warning(
                f"twilio refused the transfer of {self._call_sid}: {e.status} {e.code} {e.msg}"
            )
            return TransferOutcome.FAILED
        except (TwilioException, aiohttp.ClientError, TimeoutError, OSError) as e:
            logger.warning(f"transfer of {self._call_sid} failed: {e!r}")
            return TransferOutcome.FAILED
        # Twilio now runs the call on the new TwiML; ending our stream must not hang it up.
        self._serializer.handed_off = True
        logger.info(f"call {self._call_sid} redirected to {target}")
        return TransferOutcome.INITIATED

    async def warm_transfer(
        self, target: str, summary: str, brief: Brief | None = None
    ) -> TransferOutcome:
        """Twilio says ``summary`` to the person itself (``<Say>`` before the conference)."""
        settings = self._settings
        if not (settings.twilio_account_sid and settings.twilio_auth_token and self._call_sid):
            raise UnsupportedOperation(
                "transfers need TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and a CallSid"
            )
        if self._warm is None or not self._caller_id:
            raise UnsupportedOperation("warm transfers need a status URL and a caller ID")
        if not valid_transfer_target(target):
            return TransferOutcome.INVALID_TARGET
        waits, status_url = self._warm
        room = f"warm-{self._call_sid}"
        answered = waits.expect(self._call_sid)
        person = None
        try:
            async with AsyncTwilioHttpClient(
                timeout=settings.provider_connect_timeout_secs * 5
            ) as http:
                client = rest_client(settings, http)
                person = await client.calls.create_async(
                    to=target,
                    from_=self._caller_id,
                    twiml=conference_twiml(room, say=summary),
                    timeout=settings.transfer_ring_secs,
                    status_callback=status_url,
                    status_callback_event=["initiated", "ringing", "answered", "completed"],
                )
                try:
                    outcome = await asyncio.wait_for(answered, settings.transfer_ring_secs + 10)
                except TimeoutError:
                    outcome = TransferOutcome.NO_ANSWER
                if outcome is not TransferOutcome.ANSWERED:
                    await _quietly_cancel(client, person.sid)
                    return outcome
                await client.calls(self._call_sid).update_async(twiml=conference_twiml(room))
        except TwilioRestException as e:
            logger.warning(
                f"warm transfer of {self._call_sid} refused: {e.status} {e.code} {e.msg}"
            )
            return TransferOutcome.FAILED
        except (TwilioException, aiohttp.ClientError, TimeoutError, OSError) as e:
            logger.warning(f"warm transfer of {self._call_sid} failed: {e!r}")
            return TransferOutcome.FAILED
        finally:
            waits.forget(self._call_sid)
        self._serializer.handed_off = True
        logger.info(f"call {self._call_sid} bridged to {target} in conference {room}")
        return TransferOutcome.ANSWERED


async def _quietly_cancel(client: Client, sid: str) -> None:
    """Stop ringing (or end) the person's leg of a warm transfer nobody took."""
    try:
        await client.calls(sid).update_async(status="completed")
    except (TwilioException, aiohttp.ClientError, TimeoutError, OSError) as e:
        logger.warning(f"could not end the unanswered transfer leg {sid}: {e!r}")


def warm_status_url(base: str, call_sid: str) -> str:
    return f"{base.rstrip('/')}{WARM_STATUS_PATH}?call={quote(call_sid)}"


def transfer_status_url(base: str, call_sid: str) -> str:
    return f"{base.rstrip('/')}{TRANSFER_STATUS_PATH}?call={quote(call_sid)}"


def transfer_status_router(
    settings: Settings,
    public_url: str | None,
    on_result: Callable[[str, TransferOutcome, dict[str, str]], None],
    warm: WarmTransferWaits,
    *,
    resume_url: str | None = None,
) -> APIRouter:
    """``POST /twilio/transfer-status``: Twilio's ``<Dial action>`` report of a cold transfer;
    ``POST /twilio/warm-status``: status callbacks of a warm transfer's call to the person.

    With ``resume_url`` (the orchestrators' ``/twilio/resume``, in a pool) a cold transfer nobody
    took sends the caller back to an agent, which carries the conversation on; without, the
    caller hears an apology and the call ends."""
    router = APIRouter()

    @router.post(WARM_STATUS_PATH)
    async def warm_status(request: Request) -> Response:
        form, _base = await verified_webhook_form(request, public_url, settings.twilio_auth_token)
        call_sid, status = request.query_params.get("call", ""), form.get("CallStatus", "")
        if warm.report(call_sid, status):
            logger.info(f"call {call_sid}: warm transfer leg {status}")
        return Response(status_code=204)

    @router.post(TRANSFER_STATUS_PATH)
    async def transfer_status(request: Request) -> Response:
        form, _base = await verified_webhook_form(request, public_url, settings.twilio_auth_token)
        call_sid = request.query_params.get("call") or form.get("CallSid", "")
        status = form.get("DialCallStatus", "")
        outcome = _DIAL_OUTCOMES.get(status, TransferOutcome.FAILED)
        metrics.TRANSFERS.labels(outcome=outcome.value).inc()
        logger.info(
            f"call {call_sid}: transfer {outcome.value} (DialCallStatus {status or 'missing'})"
        )
        on_result(call_sid, outcome, form)
        response = VoiceResponse()
        if outcome is not TransferOutcome.ANSWERED and resume_url:
            response.redirect(f"{resume_url}?{RESUME_AFTER_PARAM}={RESUMED_AFTER_TRANSFER}", method="POST")
            return Response(str(response), media_type="application/xml")
        if outcome is not TransferOutcome.ANSWERED:
            response.say(UNANSWERED_LINE)
        response.hangup()
        return Response(str(response), media_type="application/xml")

    return router
