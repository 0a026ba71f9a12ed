"""The job stream: enqueue, claim, keep alive, reclaim from dead workers, acknowledge.

Redis Streams with a consumer group give at-least-once delivery: a claimed job stays in the
group's pending list until acknowledged. A worker refreshes the idle time of the jobs it is
running; a job whose idle time passes ``reclaim_idle`` belongs to a worker that stopped
(crashed, hung) and is handed to another worker. Exactly one agent per call is enforced on
top of that by call ownership (``CallLedger.take``).
"""

from __future__ import annotations

import time

import redis.asyncio as redis
from loguru import logger
from pydantic import ValidationError

from switchboard.dispatch import keys
from switchboard.dispatch.models import Job
from switchboard.observability import metrics

Claimed = tuple[str, Job]


class JobQueue:
    """Operations on ``sb:jobs`` and its ``workers`` consumer group."""

    def __init__(self, client: redis.Redis):
        self._redis = client

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(keys.jobs(), keys.JOB_GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def enqueue(self, job: Job, state: dict[str, str] | None = None, state_ttl_secs: int = 86400) -> str:
        """Add a job, and its call's initial state, in one round trip (state first, atomically)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            if state:
                pipe.hset(keys.call(job.call_id), mapping=state)
                pipe.expire(keys.call(job.call_id), state_ttl_secs)
            pipe.xadd(keys.jobs(), job.to_fields())
            replies = await pipe.execute()
        metrics.JOBS_DISPATCHED.labels(kind=job.kind.value).inc()
        return replies[-1]

    async def claim(self, consumer: str, block_ms: int, count: int = 1) -> list[Claimed]:
        """Up to ``count`` undelivered jobs, waiting up to ``block_ms`` for the first."""
        reply = await self._redis.xreadgroup(
            keys.JOB_GROUP, consumer, {keys.jobs(): ">"}, count=count, block=block_ms
        )
        claimed = []
        for _stream, entries in reply or []:
            for msg_id, fields in entries:
                job = await self._parse(msg_id, fields)
                if job is not None:
                    claimed.append((msg_id, job))
        return claimed

    async def reclaim(self, consumer: str, min_idle_secs: float) -> list[Claimed]:
        """Jobs pending on consumers that stopped refreshing them, now ours."""
        _next, entries, _deleted = await self._redis.xautoclaim(
            keys.jobs(), keys.JOB_GROUP, consumer, int(min_idle_secs * 1000), "0-0", count=10
        )
        claimed = []
        for msg_id, fields in entries:
            if not fields:  # deleted while pending
                await self._redis.xack(keys.jobs(), keys.JOB_GROUP, msg_id)
                continue
            job = await self._parse(msg_id, fields)
            if job is not None:
                metrics.JOBS_REDELIVERED.inc()
                logger.warning(f"job {job.job_id} ({job.call_id}) redelivered to {consumer}")
                claimed.append((msg_id, job))
        return claimed

    async def refresh(self, consumer: str, msg_ids: list[str]) -> None:
        """Reset the idle time of jobs we are running, so nobody reclaims them."""
        if msg_ids:
            await self._redis.xclaim(keys.jobs(), keys.JOB_GROUP, consumer, 0, msg_ids, justid=True)

    async def ack(self, msg_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(keys.jobs(), keys.JOB_GROUP, msg_id)
            pipe.xdel(keys.jobs(), msg_id)
            await pipe.execute()

    async def requeue(self, msg_id: str, job: Job) -> None:
        """Give a job back (we took it but cannot run it): a fresh entry, the old one acked."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.jobs(), job.to_fields())
            pipe.xack(keys.jobs(), keys.JOB_GROUP, msg_id)
            pipe.xdel(keys.jobs(), msg_id)
            await pipe.execute()

    async def waiting(self) -> int:
        """Jobs not yet delivered to any worker."""
        try:
            groups = await self._redis.xinfo_groups(keys.jobs())
        except redis.ResponseError:
            return 0
        for group in groups:
            if group["name"] == keys.JOB_GROUP:
                lag = group.get("lag")
                return int(lag) if lag is not None else 0
        return 0

    async def pending(self) -> int:
        """Jobs delivered but not yet acknowledged."""
        try:
            summary = await self._redis.xpending(keys.jobs(), keys.JOB_GROUP)
        except redis.ResponseError:
            return 0
        return int(summary["pending"])

    async def _parse(self, msg_id: str, fields: dict[str, str]) -> Job | None:
        try:
            return Job.from_fields(fields)
        except (KeyError, ValidationError) as e:
            # A job we cannot read would be redelivered forever: drop it loudly.
            logger.error(f"dropping unreadable job {msg_id}: {e}")
            metrics.PIPELINE_ERRORS.labels(stage="dispatch").inc()
            await self.ack(msg_id)
            return None


def now_ms() -> float:
    return time.time() * 1000
