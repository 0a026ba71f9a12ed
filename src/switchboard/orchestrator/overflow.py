"""A good answer for a call the pool cannot admit, chosen per agent (``overflow`` in its YAML).

* ``busy``: the busy line, then hang up;
* ``transfer``: a short line, then ``<Dial>`` the people behind the agents (number or SIP URI);
* ``queue``: a short line, then hold audio in a loop (``<Play>`` then ``<Redirect>`` to
  ``/twilio/hold``, which tells the caller their place in line each time round). Every
  orchestrator runs :meth:`OverflowDesk.run`, which places the head of the queue as soon as a
  worker admits it (``dispatch.hold``) and moves the call onto its stream at once through
  Twilio's REST API; without REST credentials the call is connected at its next ``/twilio/hold``.
  A call that waited ``max_wait_secs`` gets the queue's ``then`` action the same two ways.

Every decision is counted: ``admission_decisions_total``, ``hold_outcomes_total``,
``hold_wait_seconds``, and the queue's length and oldest wait as gauges (what autoscaling reads).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from collections.abc import Awaitable, Callable
from functools import cache

import aiohttp
import numpy as np
import redis.asyncio as redis
from fastapi import APIRouter, Request, Response
from loguru import logger
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.twiml.voice_response import VoiceResponse

from switchboard.agent.config import AgentConfig, BusyOverflow, QueueOverflow, TransferOverflow
from switchboard.agent.directory import AgentDirectory
from switchboard.dispatch.hold import HoldLine
from switchboard.observability import metrics
from switchboard.observability.logging import call_context
from switchboard.settings import Settings
from switchboard.telephony.twilio import busy_twiml, verified_webhook_form, webhook_call_id
from switchboard.telephony.twilio_rest import dial_twiml, rest_client

HOLD_PATH = "/twilio/hold"
HOLD_AUDIO_PATH = "/twilio/hold.wav"
HOLD_AUDIO_SECS = 12.0  # one round on hold: a /twilio/hold request per held caller every ~12 s
_LIVE_STATUSES = {"", "in-progress", "ringing", "queued"}
# (call id, call sid, worker id, base URL, stream parameters, query) -> the TwiML connecting it.
Connector = Callable[[str, str, str, str, dict[str, str], dict[str, str]], Awaitable[str]]
# (worker id, call id): give back a slot reserved for a call that will not come.
Releaser = Callable[[str, str], Awaitable[None]]


@cache
def hold_audio() -> bytes:
    """The default hold audio: a soft two-note chime every two seconds, 8 kHz mono WAV."""
    rate = 8000
    t = np.arange(int(HOLD_AUDIO_SECS * rate)) / rate
    phase = t % 2.0
    note = np.where(phase < 0.5, 523.25, np.where(phase < 1.0, 659.25, 0.0))
    envelope = np.where(phase < 1.0, np.exp(-3 * (phase % 0.5)), 0.0)
    samples = (0.15 * 32767 * envelope * np.sin(2 * np.pi * note * t)).astype(np.int16)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def final_twiml(action: BusyOverflow | TransferOverflow, settings: Settings) -> str:
    """The TwiML of a busy or transfer answer."""
    if isinstance(action, TransferOverflow):
        return dial_twiml(action.to, action=None, ring_secs=settings.transfer_ring_secs, say=action.line)
    return busy_twiml(action.line)


def hold_twiml(base: str, queue: QueueOverflow, position: int | None, *, first: bool) -> str:
    """One round of holding: the line (first round), the caller's place, hold audio, come back."""
    response = VoiceResponse()
    if first:
        response.say(queue.line)
    if queue.announce_position and position is not None:
        response.say(f"You are number {position} in line.")
    response.play(str(queue.hold_audio_url) if queue.hold_audio_url else f"{base}{HOLD_AUDIO_PATH}")
    response.redirect(f"{base}{HOLD_PATH}", method="POST")
    return str(response)


class OverflowDesk:
    """Answers calls the pool cannot admit, and serves the hold queue."""

    def __init__(
        self, settings: Settings, agents: AgentDirectory, line: HoldLine, connect: Connector, release: Releaser
    ):
        self._settings = settings
        self.agents = agents
        self.line = line
        self._connect = connect
        self._release = release
        self._tasks: set[asyncio.Task] = set()

    async def answer(
        self, call_id: str, call_sid: str, agent: AgentConfig, base: str, params: dict[str, str], query: dict[str, str]
    ) -> str:
        """The TwiML for a new call no worker admitted, by its agent's ``overflow``."""
        overflow = agent.overflow
        if isinstance(overflow, QueueOverflow):
            assert overflow.max_wait_secs is not None  # refused when the config was loaded
            fields = {
                "agent": agent.name, "call_sid": call_sid, "base": base,
                "params": json.dumps(params), "query": json.dumps(query),
            }
            position = await self.line.join(call_id, overflow.max_wait_secs, fields)
            metrics.ADMISSION_DECISIONS.labels(decision="queued").inc()
            logger.info(f"{call_id}: no headroom; holding at position {position} for {agent.name}")
            return hold_twiml(base, overflow, position, first=True)
        return self._final(call_id, overflow)

    def _final(self, call_id: str, action: BusyOverflow | TransferOverflow) -> str:
        decision = "overflowed" if isinstance(action, TransferOverflow) else "refused"
        metrics.ADMISSION_DECISIONS.labels(decision=decision).inc()
        logger.warning(f"{call_id}: no headroom; {decision}")
        return final_twiml(action, self._settings)

    def _queue_of(self, held: dict[str, str]) -> QueueOverflow | None:
        agent = self.agents.by_name(held.get("agent", "")) or self.agents.default
        return agent.overflow if isinstance(agent.overflow, QueueOverflow) else None

    async def hold(self, call_id: str, call_status: str, base: str) -> str:
        """``/twilio/hold``: the call's next round on hold, its stream once placed, or its
        fallback once its wait ran out."""
        held = await self.line.held(call_id)
        if not held:
            return busy_twiml(BusyOverflow(action="busy").line)  # not a call we queued (or long gone)
        if held.get("twiml"):
            return held["twiml"]  # placed, and Twilio came back before (or instead of) the REST update
        if call_status not in _LIVE_STATUSES:
            if await self.line.leave(call_id):
                _ended(held, "abandoned")
            return VoiceResponse().to_xml()
        queue = self._queue_of(held)
        if held.get("fallback") or queue is None:
            return held.get("fallback") or busy_twiml(BusyOverflow(action="busy").line)
        position = await self.line.position(call_id)
        if position is None:  # taken out a moment ago; its answer is being written
            await asyncio.sleep(0.2)
            held = await self.line.held(call_id)
            return held.get("twiml") or held.get("fallback") or hold_twiml(base, queue, None, first=False)
        return hold_twiml(base, queue, position, first=False)

    async def run(self) -> None:
        """Serve the queue: time out the calls past their wait, place the head while workers admit."""
        interval = self._settings.hold_poll_secs
        while True:
            try:
                await self._serve_once()
            except (redis.RedisError, OSError) as e:
                logger.warning(f"hold queue: {e}")
            await asyncio.sleep(interval)

    async def _serve_once(self) -> None:
        for call_id in await self.line.expired():
            await self._time_out(call_id)
        while (placed := await self.line.place_head(self._settings.reservation_ttl_secs)) is not None:
            await self._place(*placed)
        metrics.HOLD_QUEUE_LENGTH.set(await self.line.length())
        metrics.HOLD_QUEUE_OLDEST_SECONDS.set(await self.line.oldest_wait())

    async def _time_out(self, call_id: str) -> None:
        with call_context(call_id):
            held = await self.line.held(call_id)
            queue = self._queue_of(held)
            twiml = final_twiml(queue.then if queue else BusyOverflow(action="busy"), self._settings)
            await self.line.note(call_id, fallback=twiml)
            _ended(held, "timed_out")
            logger.warning(f"{call_id}: held past its maximum wait; {queue.then.action if queue else 'busy'}")
            self._later(self._redirect(held.get("call_sid", ""), twiml))

    async def _place(self, call_id: str, worker_id: str) -> None:
        with call_context(call_id):
            held = await self.line.held(call_id)
            twiml = await self._connect(
                call_id, held.get("call_sid", ""), worker_id, held.get("base", ""),
                json.loads(held.get("params") or "{}"), json.loads(held.get("query") or "{}"),
            )
            await self.line.note(call_id, twiml=twiml)
            self._later(self._connect_now(call_id, worker_id, held, twiml))

    async def _connect_now(self, call_id: str, worker_id: str, held: dict[str, str], twiml: str) -> None:
        with call_context(call_id):
            if await self._redirect(held.get("call_sid", ""), twiml) is False:
                # The caller hung up while holding: their slot goes to the next caller now, not
                # when the reservation lapses.
                await self._release(worker_id, call_id)
                _ended(held, "abandoned")
                logger.info(f"{call_id}: hung up while holding; the slot on {worker_id} is given back")
                return
            _ended(held, "connected")
            metrics.ADMISSION_DECISIONS.labels(decision="admitted").inc()
            logger.info(f"{call_id}: connected from the hold queue to worker {worker_id}")

    def _later(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _redirect(self, call_sid: str, twiml: str) -> bool | None:
        """Move the call onto ``twiml`` now (it would get it at its next ``/twilio/hold`` anyway):
        True if moved, False if Twilio says the call is over, None if we could not ask."""
        settings = self._settings
        if not (settings.twilio_account_sid and settings.twilio_auth_token and call_sid):
            return None
        try:
            async with AsyncTwilioHttpClient(timeout=settings.provider_connect_timeout_secs * 5) as http:
                await rest_client(settings, http).calls(call_sid).update_async(twiml=twiml)
        except TwilioRestException as e:
            logger.warning(f"hold queue: twilio refused to redirect {call_sid}: {e.status} {e.code} {e.msg}")
            return False if e.status in (400, 404) else None
        except (TwilioException, aiohttp.ClientError, TimeoutError, OSError) as e:
            # /twilio/hold answers the call when its hold audio comes round.
            logger.warning(f"hold queue: could not redirect {call_sid}: {e!r}")
            return None
        return True

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _ended(held: dict[str, str], outcome: str) -> None:
    metrics.HOLD_OUTCOMES.labels(outcome=outcome).inc()
    if arrived := held.get("arrived_at"):
        metrics.HOLD_WAIT_SECONDS.observe(max(0.0, time.time() - float(arrived)))


def create_overflow_router(settings: Settings, desk: OverflowDesk) -> APIRouter:
    """``/twilio/hold`` (each round on hold) and ``/twilio/hold.wav`` (the default hold audio,
    nothing of a caller's: Twilio fetches it without credentials)."""
    router = APIRouter()

    @router.post(HOLD_PATH)
    async def twilio_hold(request: Request) -> Response:
        form, base = await verified_webhook_form(request, settings.public_url, settings.twilio_auth_token)
        _call_sid, call_id = webhook_call_id(form)
        with call_context(call_id):
            twiml = await desk.hold(call_id, form.get("CallStatus", ""), base)
        return Response(twiml, media_type="application/xml")

    @router.get(HOLD_AUDIO_PATH)
    async def hold_music() -> Response:
        return Response(hold_audio(), media_type="audio/wav", headers={"Cache-Control": "public, max-age=86400"})

    return router
