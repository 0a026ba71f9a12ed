"""Browser-call signalling through Redis: an orchestrator hands an SDP offer to a worker.

The orchestrator checks the offer, picks the worker with the most free slots, pushes the offer
onto its inbox and blocks on a reply key made for that one request; the worker answers with its
SDP (or an error). No slot is held for a browser call until its peer connection is up (the
worker takes one then), so offers that never connect cannot keep phone calls out. ICE is
not trickled: the browser sends its offer once gathering is complete and aiortc puts all of
its candidates in the answer, so one round trip sets up the call. Media then flows directly
between browser and worker.

| key | type | what |
|---|---|---|
| ``sb:webrtc:offers:{worker_id}`` | list, TTL | offers waiting for that worker (LPUSH in, BRPOP out) |
| ``sb:webrtc:answer:{request_id}`` | list, TTL | the one reply to one offer |
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

import redis.asyncio as redis
from aiortc.sdp import SessionDescription
from pydantic import BaseModel, ConfigDict, Field

from switchboard.dispatch.keys import PREFIX
from switchboard.errors import TelephonyError

ANSWER_TIMEOUT_SECS = 10.0  # offer to answer; a worker answers in well under a second
MAX_SDP_CHARS = 20_000  # a browser's audio-only offer is 2-6 kB
_INBOX_TTL_SECS = 60  # a dead worker's inbox disappears on its own
_REPLY_TTL_SECS = 30
_POLL_SECS = 2.0  # below the Redis client's socket timeout, so blocking pops never trip it


def offers(worker_id: str) -> str:
    return f"{PREFIX}:webrtc:offers:{worker_id}"


def answer(request_id: str) -> str:
    return f"{PREFIX}:webrtc:answer:{request_id}"


class SignallingError(TelephonyError):
    """An offer could not be answered."""


class AnswerTimeout(SignallingError):
    """The worker did not answer an offer in time.

    ``withdrawn`` says the offer was taken back before the worker ever saw it, so the worker
    cannot be holding anything for the call.
    """

    def __init__(self, message: str, *, withdrawn: bool):
        super().__init__(message)
        self.withdrawn = withdrawn


def offer_sdp_problem(sdp: str) -> str | None:
    """What makes ``sdp`` unusable as a browser's audio offer, or None if nothing does."""
    try:
        description = SessionDescription.parse(sdp)
    except (ValueError, IndexError, KeyError) as e:
        return f"sdp: not a session description ({e})"
    audio = next((m for m in description.media if m.kind == "audio"), None)
    if audio is None:
        return "sdp: no audio media section (m=audio)"
    if not (audio.ice and audio.ice.usernameFragment and audio.ice.password):
        return "sdp: no ICE credentials (a=ice-ufrag, a=ice-pwd)"
    if not (audio.dtls and audio.dtls.fingerprints):
        return "sdp: no DTLS fingerprint (a=fingerprint)"
    return None


class Offer(BaseModel):
    """A browser's SDP offer on its way to a worker."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    call_id: str
    worker_id: str
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    type: Literal["offer"] = "offer"
    deadline: float = Field(description="Epoch seconds after which nobody waits for the answer.")


class Answer(BaseModel):
    """A worker's reply to one offer: an SDP answer, or why there is none."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    request_id: str
    sdp: str | None = None
    type: Literal["answer"] | None = None
    pc_id: str | None = None
    error: str | None = None


class OfferRelay:
    """Orchestrator side: send an offer to a worker and wait for its answer."""

    def __init__(self, client: redis.Redis):
        self._redis = client

    async def request_answer(
        self, worker_id: str, call_id: str, sdp: str, timeout_secs: float = ANSWER_TIMEOUT_SECS
    ) -> Answer:
        """The worker's reply; raises ``AnswerTimeout`` if none came in time."""
        offer = Offer(
            call_id=call_id, worker_id=worker_id, sdp=sdp, deadline=time.time() + timeout_secs
        )
        payload = offer.model_dump_json()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(offers(worker_id), payload)
            pipe.expire(offers(worker_id), _INBOX_TTL_SECS)
            await pipe.execute()
        deadline = time.monotonic() + timeout_secs
        while (remaining := deadline - time.monotonic()) > 0:
            popped = await self._redis.blpop(
                [answer(offer.request_id)], timeout=min(remaining, _POLL_SECS)
            )
            if popped is not None:
                return Answer.model_validate_json(popped[1])
        withdrawn = bool(await self._redis.lrem(offers(worker_id), 1, payload))
        raise AnswerTimeout(
            f"worker {worker_id} did not answer within {timeout_secs:.0f} s", withdrawn=withdrawn
        )


class OfferInbox:
    """Worker side: take this worker's offers one at a time and reply to each."""

    def __init__(self, client: redis.Redis, worker_id: str):
        self._redis = client
        self._worker_id = worker_id

    async def next_offer(self, block_secs: float = 1.0) -> Offer | None:
        """The oldest waiting offer, or None after ``block_secs`` without one.

        Raises pydantic's ``ValidationError`` for a malformed entry (it is consumed either way).
        """
        popped = await self._redis.brpop(
            [offers(self._worker_id)], timeout=min(block_secs, _POLL_SECS)
        )
        if popped is None:
            return None
        return Offer.model_validate_json(popped[1])

    async def take_waiting(self) -> list[Offer]:
        """Every offer still queued, without blocking (used when the worker stops)."""
        waiting = []
        while (raw := await self._redis.rpop(offers(self._worker_id))) is not None:
            try:
                waiting.append(Offer.model_validate_json(raw))
            except ValueError:
                continue  # nobody can be told about an offer we cannot read
        return waiting

    async def reply(self, reply: Answer) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(answer(reply.request_id), reply.model_dump_json())
            pipe.expire(answer(reply.request_id), _REPLY_TTL_SECS)
            await pipe.execute()

    async def refuse(self, offer: Offer, reason: str) -> None:
        await self.reply(Answer(request_id=offer.request_id, error=reason))
