"""Per-call state in Redis, and the ownership rule that lets exactly one agent run a call."""

from __future__ import annotations

import time

import redis.asyncio as redis

from switchboard.dispatch import keys
from switchboard.dispatch.models import CallStatus

# KEYS: call hash. ARGV: worker_id, now, ttl, prefix. Returns 'run', 'done' or 'owned'.
# A call may be taken when nobody owns it, or when its owner's registration has expired.
_TAKE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' or status == 'failed' then return 'done' end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. ':worker:' .. owner) == 1 then
  return 'owned'
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'status', 'running', 'started_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'runs', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 'run'
"""


class CallLedger:
    """Call state hashes (``sb:call:{id}``) with a TTL."""

    def __init__(self, client: redis.Redis, ttl_secs: int):
        self._redis = client
        self._ttl = ttl_secs
        self._take = client.register_script(_TAKE)

    @staticmethod
    def state(status: CallStatus, **fields: str | float | int) -> dict[str, str]:
        """A call state hash's fields for ``status``, stamped now."""
        mapping = {"status": status.value, f"{status.value}_at": time.time(), **fields}
        return {k: str(v) for k, v in mapping.items()}

    async def record(self, call_id: str, status: CallStatus, **fields: str | float | int) -> None:
        mapping = self.state(status, **fields)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.call(call_id), mapping=mapping)
            pipe.expire(keys.call(call_id), self._ttl)
            await pipe.execute()

    async def note(self, call_id: str, **fields: str | float | int) -> None:
        """Add fields to a call's state without changing its status."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.call(call_id), mapping={k: str(v) for k, v in fields.items()})
            pipe.expire(keys.call(call_id), self._ttl)
            await pipe.execute()

    async def finish(self, call_id: str, status: CallStatus) -> None:
        """Record how a run ended; ``completions`` counts finished runs (exactly-once checks)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.call(call_id), mapping={"status": status.value, f"{status.value}_at": str(time.time())})
            if status is CallStatus.COMPLETED:
                pipe.hincrby(keys.call(call_id), "completions", 1)
            pipe.expire(keys.call(call_id), self._ttl)
            await pipe.execute()

    async def take(self, call_id: str, worker_id: str) -> str:
        """Claim the right to run a call: 'run', 'done' (finished already) or 'owned' (alive elsewhere)."""
        return await self._take(
            keys=[keys.call(call_id)], args=[worker_id, time.time(), self._ttl, keys.PREFIX]
        )

    async def get(self, call_id: str) -> dict[str, str]:
        return await self._redis.hgetall(keys.call(call_id))

    async def active(self) -> int:
        count = 0
        async for key in self._redis.scan_iter(match=keys.call("*"), count=500):
            if await self._redis.hget(key, "status") == CallStatus.RUNNING.value:
                count += 1
        return count
