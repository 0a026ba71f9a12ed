"""The hold queue: calls waiting for headroom, first come first served across orchestrators.

A call the pool cannot admit, whose agent's overflow is ``queue``, joins ``sb:hold`` (a zset
scored by arrival) with a deadline in ``sb:hold:deadlines``. Any orchestrator may serve the
head: :meth:`HoldLine.place_head` pops it and takes a worker slot for it in one Lua script, only
if a worker admits it (``dispatch.admission``), so two orchestrators never place the same call
or place a later caller first. A call past its deadline is taken out by exactly one orchestrator
(:meth:`HoldLine.expired`), which gives it its fallback answer.
"""

from __future__ import annotations

import time

import redis.asyncio as redis

from switchboard.dispatch import keys
from switchboard.dispatch.admission import PICK_LUA

# KEYS: workers set, hold queue, deadlines. ARGV: prefix, reservation deadline, now.
# Pops the head if a worker admits it and reserves a slot there: {call_id, worker_id} or false.
_PLACE_HEAD = PICK_LUA + """
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if not head then return false end
local best = pick(ARGV[1], KEYS[1], 'queued', '')
if not best then return false end
redis.call('ZREM', KEYS[2], head)
redis.call('ZREM', KEYS[3], head)
local wkey = ARGV[1] .. ':worker:' .. best
redis.call('INCR', wkey .. ':load')
redis.call('ZADD', wkey .. ':reservations', ARGV[2], head)
redis.call('HSET', ARGV[1] .. ':hold:' .. head, 'worker', best, 'placed_at', ARGV[3])
return {head, best}
"""

# KEYS: hold queue, deadlines. ARGV: now, batch. Takes calls past their deadline out of the
# queue; returns the ones this caller took (another orchestrator may have taken some first).
_EXPIRE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local taken = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  if redis.call('ZREM', KEYS[1], id) == 1 then table.insert(taken, id) end
end
return taken
"""

_EXPIRE_BATCH = 32


class HoldLine:
    """The hold queue in Redis."""

    def __init__(self, client: redis.Redis, ttl_secs: int):
        self._redis = client
        self._ttl = ttl_secs
        self._place_head = client.register_script(_PLACE_HEAD)
        self._expire = client.register_script(_EXPIRE)

    async def join(self, call_id: str, max_wait_secs: float, fields: dict[str, str], now: float | None = None) -> int:
        """Queue a call (again: it keeps its place); returns its position, 1 for the head."""
        now = time.time() if now is None else now
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.hold_line(), {call_id: now}, nx=True)
            pipe.zadd(keys.hold_deadlines(), {call_id: now + max_wait_secs}, nx=True)
            pipe.hset(keys.held_call(call_id), mapping={"arrived_at": str(now), **fields})
            pipe.expire(keys.held_call(call_id), self._ttl)
            pipe.zrank(keys.hold_line(), call_id)
            replies = await pipe.execute()
        return int(replies[-1]) + 1

    async def position(self, call_id: str) -> int | None:
        rank = await self._redis.zrank(keys.hold_line(), call_id)
        return None if rank is None else int(rank) + 1

    async def place_head(self, hold_secs: float) -> tuple[str, str] | None:
        """Reserve a slot for the longest-waiting call if a worker admits it: (call id, worker)."""
        now = time.time()
        placed = await self._place_head(
            keys=[keys.workers(), keys.hold_line(), keys.hold_deadlines()],
            args=[keys.PREFIX, now + hold_secs, now],
        )
        return (placed[0], placed[1]) if placed else None

    async def expired(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        return list(
            await self._expire(keys=[keys.hold_line(), keys.hold_deadlines()], args=[now, _EXPIRE_BATCH])
        )

    async def leave(self, call_id: str) -> bool:
        """Take a call out of the queue (it hung up, or ran out of time); False if it was not in it."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.hold_line(), call_id)
            pipe.zrem(keys.hold_deadlines(), call_id)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def note(self, call_id: str, **fields: str) -> None:
        await self._redis.hset(keys.held_call(call_id), mapping=fields)

    async def held(self, call_id: str) -> dict[str, str]:
        return await self._redis.hgetall(keys.held_call(call_id))

    async def length(self) -> int:
        return int(await self._redis.zcard(keys.hold_line()))

    async def oldest_wait(self, now: float | None = None) -> float:
        """Seconds the head of the queue has waited; 0 when nobody waits."""
        head = await self._redis.zrange(keys.hold_line(), 0, 0, withscores=True)
        if not head:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - float(head[0][1]))
