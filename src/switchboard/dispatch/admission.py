"""Admission in Redis: each worker's headroom report, and the one rule every placement applies.

A worker reports its headroom (``sb:worker:{id}:headroom``) with each heartbeat: whether it is
open, and ``admit_until``, the load it accepts up to before its next report (its load when it
measured, plus what it judged another few calls cost). A placement takes a slot only inside a
Lua script that reads that report beside the live load counter, so:

* two orchestrators placing in the same instant are serialized by Redis: never over-admitting;
* calls admitted since the report are already in the load counter, so a burst between two
  reports stops at ``admit_until`` instead of slipping through;
* ``max_calls`` (the registered ``capacity``) stays a hard ceiling whatever the report says;
* a worker with no report (``admission=slots``) admits up to its capacity, as before.

Calls in the hold queue (:mod:`switchboard.dispatch.hold`) come first: a new call is admitted
only while nobody is waiting, so freed headroom goes to the caller who waited longest.
"""

from __future__ import annotations

from enum import StrEnum

import redis.asyncio as redis
from pydantic import BaseModel, ConfigDict, Field

from switchboard.dispatch import keys


class ClosedReason(StrEnum):
    """Why a worker admits no more calls right now."""

    LATENCY = "latency"  # recent turn p95 near the objective
    LAG = "lag"  # the event loop wakes late
    CPU = "cpu"  # the machine's CPU is nearly used up
    ENGINE_QUEUE = "engine_queue"  # local STT/TTS requests are queueing
    LEARNED = "learned"  # at the load where a limit broke lately (it is re-learned as it holds)
    CEILING = "ceiling"  # max_calls reached
    DRAINING = "draining"


class AdmitMode(StrEnum):
    """Which rule a placement is held to."""

    NEW = "new"  # a new call: headroom, and nobody waiting in the hold queue
    QUEUED = "queued"  # the head of the hold queue: headroom
    RESUME = "resume"  # an admitted call whose worker was lost: the ceiling only


class HeadroomReport(BaseModel):
    """What a worker last measured and decided (``sb:worker:{id}:headroom``)."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    open: bool
    admit_until: int = Field(ge=0, description="Admit while the worker's load is below this")
    reason: ClosedReason | None = None
    load: int = Field(ge=0, description="The load counter when measured")
    p95_ms: float | None = Field(None, description="Agent-side turn latency p95 over the window")
    turns: int = Field(0, ge=0, description="Turns in the window")
    lag_ms: float = 0.0
    cpu: float = Field(0.0, description="Machine CPU use, 0-1")
    engine_queue: int = 0
    at: float = Field(description="Epoch seconds of the measurement")

    def to_fields(self) -> dict[str, str]:
        data = self.model_dump(mode="json")
        data["open"] = 1 if self.open else 0
        return {k: ("" if v is None else str(v)) for k, v in data.items()}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> HeadroomReport:
        data: dict = {k: (v if v != "" else None) for k, v in fields.items()}
        data["open"] = fields.get("open") == "1"
        return cls.model_validate(data)


# Lua: how many more calls the worker at ``wkey`` admits now under ``mode``; 0 when closed.
# The one admission rule, shared by every script that places a call.
ROOM_LUA = """
local function room_on(wkey, mode)
  local info = redis.call('HMGET', wkey, 'capacity', 'draining')
  if not info[1] or info[2] == '1' then return 0 end
  local load = tonumber(redis.call('GET', wkey .. ':load') or '0')
  local limit = tonumber(info[1])
  if mode ~= 'resume' then
    local h = redis.call('HMGET', wkey .. ':headroom', 'open', 'admit_until')
    if h[1] then
      if h[1] ~= '1' then return 0 end
      limit = math.min(limit, tonumber(h[2]))
    end
  end
  return limit - load
end
"""

# Lua: the worker with the most room under ``mode`` (ARGV-independent); ``exclude`` may be ''.
PICK_LUA = (
    ROOM_LUA
    + """
local function pick(prefix, workers_key, mode, exclude)
  local best, best_room = nil, 0
  for _, id in ipairs(redis.call('SMEMBERS', workers_key)) do
    if id ~= exclude then
      local room = room_on(prefix .. ':worker:' .. id, mode)
      if room > best_room then best, best_room = id, room end
    end
  end
  return best
end
"""
)


class HeadroomBoard:
    """Workers' headroom reports in Redis: written by each worker, read by ``/stats``."""

    def __init__(self, client: redis.Redis, ttl_secs: float):
        self._redis = client
        self._ttl_ms = int(ttl_secs * 1000)

    async def publish(self, worker_id: str, report: HeadroomReport) -> None:
        key = keys.worker_headroom(worker_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=report.to_fields())
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def withdraw(self, worker_id: str) -> None:
        await self._redis.delete(keys.worker_headroom(worker_id))

    async def reports(self, worker_ids: list[str]) -> dict[str, HeadroomReport]:
        """The live reports of these workers (a worker in ``admission=slots`` has none)."""
        if not worker_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for worker_id in worker_ids:
                pipe.hgetall(keys.worker_headroom(worker_id))
            replies = await pipe.execute()
        return {
            worker_id: HeadroomReport.from_fields(fields)
            for worker_id, fields in zip(worker_ids, replies, strict=True)
            if fields
        }
