"""The worker registry and atomic capacity: who is alive, how loaded, and slot reservation.

Capacity is a per-worker counter of calls running or reserved, changed only by Lua scripts
so that two calls arriving in the same millisecond can never both take a worker's last slot
(the failure of load reports refreshed on a timer). Browser calls also count against a
worker's browser cap (``webrtc_capacity``) from the moment they are placed: a set of held call
ids per worker, each with the deadline by which its peer must connect (``+inf`` once it has),
so an offer whose browser never connects frees its place on its own.
"""

from __future__ import annotations

import time

import redis.asyncio as redis
from loguru import logger

from switchboard.dispatch import keys
from switchboard.dispatch.admission import PICK_LUA, ROOM_LUA, AdmitMode
from switchboard.dispatch.models import WorkerInfo
from switchboard.observability import metrics

# KEYS: workers set, hold queue. ARGV: prefix, call_id, deadline, excluded worker id (may be ''),
# admission mode. Picks the live worker with the most room under the admission rule
# (dispatch.admission) and takes a slot there; returns its id or false. A new call waits its turn
# behind held calls: it is admitted only while the hold queue is empty.
_RESERVE_ANY = PICK_LUA + """
if ARGV[5] == 'new' and redis.call('ZCARD', KEYS[2]) > 0 then return false end
local best = pick(ARGV[1], KEYS[1], ARGV[5], ARGV[4])
if not best then return false end
local wkey = ARGV[1] .. ':worker:' .. best
redis.call('INCR', wkey .. ':load')
redis.call('ZADD', wkey .. ':reservations', ARGV[3], ARGV[2])
return best
"""

# KEYS: workers set. ARGV: prefix, call_id, deadline, now. Picks the live worker with room for a
# new call under the admission rule and a free browser place (most room first, then most free
# places), drops its browser holds whose deadline passed, and holds a place there; returns its id
# or false. The pool slot itself is taken only when the browser's peer connects.
_RESERVE_BROWSER = ROOM_LUA + """
local best, best_free, best_places = nil, 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local wkey = ARGV[1] .. ':worker:' .. id
  local free = room_on(wkey, 'new')
  if free > 0 then
    local holds = wkey .. ':browser'
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', '(' .. ARGV[4])
    local places = tonumber(redis.call('HGET', wkey, 'webrtc_capacity') or '0') - redis.call('ZCARD', holds)
    if places > 0 and (free > best_free or (free == best_free and places > best_places)) then
      best, best_free, best_places = id, free, places
    end
  end
end
if not best then return false end
redis.call('ZADD', ARGV[1] .. ':worker:' .. best .. ':browser', ARGV[3], ARGV[2])
return best
"""

# KEYS: worker hash, load. Takes a slot on one worker if it has one free.
_TAKE_SLOT = """
local capacity = tonumber(redis.call('HGET', KEYS[1], 'capacity') or '0')
local load = tonumber(redis.call('GET', KEYS[2]) or '0')
if load >= capacity then return 0 end
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: load, reservations. ARGV: call_id (may be ''). Frees a slot, never below zero.
_RELEASE_SLOT = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
local load = tonumber(redis.call('GET', KEYS[1]) or '0')
if load > 0 then redis.call('DECR', KEYS[1]) end
return load
"""

# KEYS: load, reservations. ARGV: now. Frees slots whose stream never connected.
_EXPIRE_RESERVATIONS = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, call_id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], call_id)
  local load = tonumber(redis.call('GET', KEYS[1]) or '0')
  if load > 0 then redis.call('DECR', KEYS[1]) end
end
return #expired
"""


class WorkerRegistry:
    """Registration, heartbeats and slots of workers."""

    def __init__(self, client: redis.Redis, worker_ttl_secs: float):
        self._redis = client
        self._ttl_ms = int(worker_ttl_secs * 1000)
        self._reserve_any = client.register_script(_RESERVE_ANY)
        self._take_slot = client.register_script(_TAKE_SLOT)
        self._release_slot = client.register_script(_RELEASE_SLOT)
        self._expire = client.register_script(_EXPIRE_RESERVATIONS)
        self._reserve_browser = client.register_script(_RESERVE_BROWSER)

    async def register(self, info: WorkerInfo) -> None:
        """Announce a (re)started worker with no calls."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.worker(info.worker_id), mapping=_fields(info))
            pipe.pexpire(keys.worker(info.worker_id), self._ttl_ms)
            pipe.set(keys.worker_load(info.worker_id), 0)
            pipe.delete(keys.worker_reservations(info.worker_id), keys.worker_browser_calls(info.worker_id))
            pipe.sadd(keys.workers(), info.worker_id)
            await pipe.execute()

    async def heartbeat(self, info: WorkerInfo) -> None:
        info.heartbeat_at = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.worker(info.worker_id), mapping=_fields(info))
            pipe.pexpire(keys.worker(info.worker_id), self._ttl_ms)
            pipe.sadd(keys.workers(), info.worker_id)
            await pipe.execute()
        await self._expire(
            keys=[keys.worker_load(info.worker_id), keys.worker_reservations(info.worker_id)],
            args=[time.time()],
        )

    async def deregister(self, worker_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.workers(), worker_id)
            pipe.delete(*_worker_keys(worker_id))
            await pipe.execute()

    async def is_alive(self, worker_id: str) -> bool:
        return bool(await self._redis.exists(keys.worker(worker_id)))

    async def media_url(self, worker_id: str) -> str | None:
        """The internal base URL a live worker registered for its media streams; None if it is gone."""
        return await self._redis.hget(keys.worker(worker_id), "media_url")

    async def live_workers(self) -> list[tuple[WorkerInfo, int]]:
        """Every worker with a fresh heartbeat, with its current load."""
        ids = sorted(await self._redis.smembers(keys.workers()))
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(keys.worker(worker_id))
                pipe.get(keys.worker_load(worker_id))
            replies = await pipe.execute()
        live, dead = [], []
        for worker_id, i in zip(ids, range(0, len(replies), 2), strict=True):
            fields, load = replies[i], replies[i + 1]
            if fields:
                live.append((WorkerInfo.model_validate(_parse(fields)), int(load or 0)))
            else:
                dead.append(worker_id)
        if dead:
            await self._forget_dead(dead)
        return live

    async def _forget_dead(self, worker_ids: list[str]) -> None:
        """Workers whose registration expired without a deregistration died: count each once."""
        for worker_id in worker_ids:
            # SREM answers 1 to exactly one caller, so several orchestrators count a death once.
            if await self._redis.srem(keys.workers(), worker_id):
                metrics.WORKER_FAILURES.inc()
                logger.warning(f"worker {worker_id} stopped heartbeating without deregistering")
                await self._redis.delete(*_worker_keys(worker_id)[1:])

    async def reserve_any(
        self, call_id: str, hold_secs: float, *, exclude: str = "", mode: AdmitMode = AdmitMode.NEW
    ) -> str | None:
        """Take a slot on the worker with the most room for a call about to connect, if one admits
        it under ``mode`` (see ``dispatch.admission``); ``exclude``: a worker not to pick (the one a
        resumed call was lost on, which may not have expired yet)."""
        worker_id = await self._reserve_any(
            keys=[keys.workers(), keys.hold_line()],
            args=[keys.PREFIX, call_id, time.time() + hold_secs, exclude, mode.value],
        )
        return worker_id or None

    async def reserve_browser(self, call_id: str, hold_secs: float) -> str | None:
        """Hold a browser-call place for ``call_id`` on the worker with the most free slots whose
        browser cap is not full; the hold lapses after ``hold_secs`` unless the worker renews it."""
        now = time.time()
        worker_id = await self._reserve_browser(
            keys=[keys.workers()], args=[keys.PREFIX, call_id, now + hold_secs, now]
        )
        return worker_id or None

    async def hold_browser(self, worker_id: str, call_id: str, until: float) -> None:
        """Keep a browser call's place on ``worker_id`` until ``until`` (epoch seconds; ``inf``:
        until it is released, for a connected call)."""
        score = "+inf" if until == float("inf") else until
        await self._redis.zadd(keys.worker_browser_calls(worker_id), {call_id: score})

    async def release_browser(self, worker_id: str, call_id: str) -> None:
        await self._redis.zrem(keys.worker_browser_calls(worker_id), call_id)

    async def browser_calls(self, worker_id: str) -> int:
        """Browser calls held on a worker (connecting or connected; lapsed holds included until
        the next placement drops them)."""
        return int(await self._redis.zcard(keys.worker_browser_calls(worker_id)))

    async def take_slot(self, worker_id: str) -> bool:
        return bool(await self._take_slot(keys=[keys.worker(worker_id), keys.worker_load(worker_id)]))

    async def pending_reservations(self, worker_id: str) -> int:
        """Slots reserved on a worker whose streams have not arrived and have not lapsed."""
        return int(await self._redis.zcount(keys.worker_reservations(worker_id), time.time(), "+inf"))

    async def confirm_reservation(self, worker_id: str, call_id: str) -> bool:
        """Turn a reservation into a running call; False if it had already expired."""
        return bool(await self._redis.zrem(keys.worker_reservations(worker_id), call_id))

    async def release_slot(self, worker_id: str, call_id: str = "") -> None:
        await self._release_slot(
            keys=[keys.worker_load(worker_id), keys.worker_reservations(worker_id)], args=[call_id]
        )


def _worker_keys(worker_id: str) -> tuple[str, ...]:
    """A worker's registration first, then everything it holds."""
    return (
        keys.worker(worker_id),
        keys.worker_load(worker_id),
        keys.worker_reservations(worker_id),
        keys.worker_browser_calls(worker_id),
        keys.worker_headroom(worker_id),
    )


def _fields(info: WorkerInfo) -> dict[str, str]:
    data = info.model_dump()
    data["draining"] = "1" if info.draining else "0"
    return {k: str(v) for k, v in data.items()}


def _parse(fields: dict[str, str]) -> dict:
    data: dict = dict(fields)
    data["version"] = int(fields.get("version", "1"))
    data["draining"] = fields.get("draining") == "1"
    return data
