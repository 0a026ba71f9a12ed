"""Placing a Twilio call on a worker: a reserved slot, a stream token, the ``<Connect><Stream>``.

A new call (``/twilio/voice``) and a call coming back after its stream was lost
(``/twilio/resume``, the ``<Redirect>`` that follows every stream) are placed the same way.
The resume answer decides from the call's session (:mod:`switchboard.dispatch.sessions`):
a call that ended hangs up; a call whose worker died or drained out of time goes to another
worker, which carries the conversation on. While Redis is unreachable no call can be placed:
the caller hears the busy line (a new call) or the lost line (a resume) from
:func:`redis_down_twiml`, never an HTTP error that Twilio would answer with its own message.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from loguru import logger

from switchboard.agent.config import BUSY_LINE
from switchboard.agent.directory import AgentDirectory
from switchboard.call_ids import call_id_for_twilio
from switchboard.dispatch import stream_tokens
from switchboard.dispatch.admission import AdmitMode
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.hold import HoldLine
from switchboard.dispatch.models import CallStatus
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.dispatch.sessions import CallSessions
from switchboard.observability import metrics
from switchboard.observability.logging import call_context
from switchboard.orchestrator.media_edge import EDGE_PATH, STREAM_TOKEN_PARAM
from switchboard.orchestrator.overflow import OverflowDesk
from switchboard.settings import Settings
from switchboard.telephony.outbound import answering_machine_twiml, stream_parameters
from switchboard.telephony.twilio import (
    RESUME_PATH,
    VOICE_PATH,
    busy_twiml,
    connect_stream_twiml,
    hangup_twiml,
    verified_webhook_form,
    webhook_call_id,
    websocket_url,
)
from switchboard.telephony.twilio_rest import RESUME_AFTER_PARAM

BUSY_MESSAGE = BUSY_LINE
LOST_MESSAGE = "Sorry, we are having trouble connecting your call. Please call again. Goodbye."
# Twilio's redirect after a stream reports the call as live; anything else means it is over.
_LIVE_STATUSES = {"", "in-progress", "ringing", "queued"}


def redis_down_twiml(path: str) -> str | None:
    """What a Twilio call webhook answers when Redis could not be reached for it (the app's
    Redis error handler asks); None for any other path."""
    line = {VOICE_PATH: BUSY_MESSAGE, RESUME_PATH: LOST_MESSAGE}.get(path)
    return busy_twiml(line) if line is not None else None


class StreamPlacer:
    """Reserves a worker slot for a Twilio call and answers the TwiML that connects it; a new call
    no worker admits gets its agent's overflow answer (``orchestrator.overflow``)."""

    def __init__(
        self, settings: Settings, registry: WorkerRegistry, ledger: CallLedger, sessions: CallSessions,
        agents: AgentDirectory | None = None, hold: HoldLine | None = None,
    ):
        """``agents`` and ``hold``: the overflow answers and the hold queue (without them, busy)."""
        self._settings = settings
        self._registry = registry
        self._ledger = ledger
        self.sessions = sessions
        self._agents = agents
        self.desk = (
            OverflowDesk(settings, agents, hold, self.connect, registry.release_slot) if agents and hold else None
        )

    async def place(
        self, call_id: str, call_sid: str, base: str, params: dict[str, str], query: dict[str, str],
        *, exclude: str = "", busy_line: str = BUSY_MESSAGE, resume: int = 0,
    ) -> str:
        """The TwiML connecting the call to a worker, or saying ``busy_line`` if none has a slot.
        ``resume`` (> 0 from ``/twilio/resume`` only) lets the worker carry on the conversation."""
        settings = self._settings
        # A resumed call was admitted already: it is held to the ceiling, not to headroom.
        mode = AdmitMode.RESUME if resume else AdmitMode.NEW
        worker_id = await self._registry.reserve_any(
            call_id, settings.reservation_ttl_secs, exclude=exclude, mode=mode
        )
        if worker_id is None and exclude:
            # The worker the call was lost on may be alive after all (its edge died, not it).
            worker_id = await self._registry.reserve_any(call_id, settings.reservation_ttl_secs, mode=mode)
        if worker_id is None:
            metrics.CALLS_REJECTED.labels(reason="no_capacity").inc()
            await self._ledger.record(call_id, CallStatus.REJECTED, reason="no_capacity", call_sid=call_sid)
            if not resume and self.desk is not None and self._agents is not None:
                agent = self._agents.for_call(params)
                return await self.desk.answer(call_id, call_sid, agent, base, params, query)
            logger.warning(f"{call_id}: no worker has a free slot, answering busy")
            if not resume:
                metrics.ADMISSION_DECISIONS.labels(decision="refused").inc()
            return busy_twiml(busy_line)
        if not resume:
            metrics.ADMISSION_DECISIONS.labels(decision="admitted").inc()
        return await self.connect(call_id, call_sid, worker_id, base, params, query, resume=resume)

    async def connect(
        self, call_id: str, call_sid: str, worker_id: str, base: str, params: dict[str, str],
        query: dict[str, str], *, resume: int = 0,
    ) -> str:
        """The TwiML streaming the call to ``worker_id``, where a slot is reserved for it."""
        settings = self._settings
        token = stream_tokens.issue(
            settings.stream_secret.get_secret_value(), call_id, worker_id, settings.stream_token_ttl_secs,
            resume=resume,
        )
        await self._ledger.record(call_id, CallStatus.RESERVED, worker=worker_id, call_sid=call_sid)
        # The stream enters at the public edge (any orchestrator), which relays it to the worker.
        stream = {**params, STREAM_TOKEN_PARAM: token}
        resume_url = f"{base}{RESUME_PATH}" + (f"?{urlencode(query)}" if query else "")
        return connect_stream_twiml(websocket_url(base, EDGE_PATH), stream, resume_url=resume_url)


def create_placement_router(settings: Settings, placer: StreamPlacer) -> APIRouter:
    """``/twilio/voice`` (a call rings) and ``/twilio/resume`` (its stream closed)."""
    router = APIRouter()

    @router.post(VOICE_PATH)
    async def twilio_voice(request: Request) -> Response:
        form, base = await verified_webhook_form(request, settings.public_url, settings.twilio_auth_token)
        query = dict(request.query_params)
        if (machine := answering_machine_twiml(form, query)) is not None:
            return _xml(machine)
        call_sid = form.get("CallSid") or uuid.uuid4().hex
        call_id = call_id_for_twilio(call_sid)
        with call_context(call_id):
            twiml = await placer.place(call_id, call_sid, base, stream_parameters(form, query), query)
            return _xml(twiml)

    @router.post(RESUME_PATH)
    async def twilio_resume(request: Request) -> Response:
        form, base = await verified_webhook_form(request, settings.public_url, settings.twilio_auth_token)
        call_sid, call_id = webhook_call_id(form)
        with call_context(call_id):
            fields = await placer.sessions.fields(call_id)
            if fields.get("ended") or form.get("CallStatus", "") not in _LIVE_STATUSES:
                metrics.CALLS_RESUMED.labels(result="ended").inc()
                return _xml(hangup_twiml())
            resumes = await placer.sessions.count_resume(call_id)
            if resumes > settings.max_call_resumes:
                metrics.CALLS_RESUMED.labels(result="gave_up").inc()
                logger.error(f"{call_id}: stream lost {resumes} times, giving the call up")
                return _xml(busy_twiml(LOST_MESSAGE))
            query = dict(request.query_params)
            after = query.pop(RESUME_AFTER_PARAM, "")
            params = stream_parameters(form, query)
            if after:
                params["ResumeAfter"] = after[:40]
            session = placer.sessions.parse(call_id, fields.get("state"))
            if session is not None:
                params["Agent"] = session.agent  # the agent that answered, whatever the number
            lost_on = fields.get("worker", "")
            twiml = await placer.place(
                call_id, call_sid, base, params, query, exclude=lost_on, busy_line=LOST_MESSAGE,
                resume=resumes,
            )
            placed = "<Connect>" in twiml
            metrics.CALLS_RESUMED.labels(result="placed" if placed else "no_capacity").inc()
            logger.warning(
                f"{call_id}: stream lost on worker {lost_on or '?'}; "
                + (f"placed again (resume {resumes})" if placed else "no worker free")
            )
            return _xml(twiml)

    return router


def _xml(twiml: str) -> Response:
    return Response(twiml, media_type="application/xml")
