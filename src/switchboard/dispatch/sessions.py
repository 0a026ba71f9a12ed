"""A call's conversation state in Redis, kept as the call goes, so another worker can carry it on.

The worker running a call writes its session (``sb:call:{id}:session``): which agent answers,
the conversation so far (the LLM context's user / assistant / tool messages, which scripted
agents fill too), the call-control events (digits collected, transfers tried) and when the call
began. If that worker dies, or drains out of time, the media edge leaves the session open and
Twilio comes back through ``<Redirect>`` to ``/twilio/resume``: the orchestrator places the call
on another worker, which reads the session and picks the conversation up. A call that really
ended is marked ``ended``, so the redirect that follows it hangs up.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import redis.asyncio as redis
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchboard.dispatch import keys


class CallSession(BaseModel):
    """What a worker needs to carry on a call another one started."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    call_id: str
    agent: str = Field(description="Name of the agent answering the call.")
    started_at: float = Field(default_factory=time.time)
    history: list[dict[str, Any]] = Field(
        default_factory=list, description="The conversation: LLM-context messages, oldest first."
    )
    events: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The call log's call-control events so far (switchboard.call_log, as JSON).",
    )


class CallSessions:
    """The session hashes: ``state`` (a CallSession as JSON), ``resumes``, ``ended``, ``worker``."""

    def __init__(self, client: redis.Redis, ttl_secs: int):
        self._redis = client
        self._ttl = ttl_secs

    async def save(self, session: CallSession, worker_id: str) -> None:
        key = keys.session(session.call_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"state": session.model_dump_json(), "worker": worker_id})
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def load(self, call_id: str) -> CallSession | None:
        """The session a call left behind; None if it has none, an unreadable one, or Redis cannot
        be reached (the call then starts afresh rather than not at all)."""
        try:
            raw = await self._redis.hget(keys.session(call_id), "state")
        except (redis.RedisError, OSError) as e:
            logger.warning(f"{call_id}: call session unavailable ({e}); starting afresh")
            return None
        return self.parse(call_id, raw)

    @staticmethod
    def parse(call_id: str, raw: str | None) -> CallSession | None:
        """A session's ``state`` field as read from Redis; None if absent or unreadable."""
        if raw is None:
            return None
        try:
            return CallSession.model_validate_json(raw)
        except ValidationError as e:
            logger.warning(f"{call_id}: ignoring an unreadable call session: {e}")
            return None

    async def fields(self, call_id: str) -> dict[str, str]:
        """The session hash as stored: ``state`` (see ``parse``), ``resumes``, ``ended`` and
        ``worker`` (the last worker that held the call)."""
        return await self._redis.hgetall(keys.session(call_id))

    async def end(self, call_id: str, reason: str) -> None:
        """The call is over (the agent or the carrier ended it): a redirect after it hangs up."""
        key = keys.session(call_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "ended", reason)
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def count_resume(self, call_id: str) -> int:
        """Count one more placement of a call after its stream was lost; returns the count."""
        key = keys.session(call_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "resumes", 1)
            pipe.expire(key, self._ttl)
            count, _ = await pipe.execute()
        return int(count)


def history_of(messages: list[Any]) -> list[dict[str, Any]]:
    """The context messages worth carrying to another worker (JSON-safe; no system prompt, which
    the agent's config gives)."""
    kept = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") != "system":
            try:
                kept.append(json.loads(json.dumps(message)))
            except (TypeError, ValueError):
                continue  # a provider-specific object that does not serialize: not conversation
    return kept
