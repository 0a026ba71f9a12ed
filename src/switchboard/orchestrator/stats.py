"""The numbers behind ``GET /stats``: calls, queue, workers and recent latency percentiles."""

from __future__ import annotations

import time

import numpy as np
import redis.asyncio as redis

from switchboard.dispatch import keys
from switchboard.dispatch.queue import JobQueue
from switchboard.dispatch.registry import WorkerRegistry


def percentiles(samples: list[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"count": 0, "p50": None, "p95": None, "p99": None}
    values = np.asarray(samples, dtype=float)
    return {
        "count": len(samples),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
        "p99": round(float(np.percentile(values, 99)), 1),
    }


async def collect_stats(client: redis.Redis, queue: JobQueue, registry: WorkerRegistry) -> dict:
    now = time.time()
    workers = await registry.live_workers()
    dispatch = [float(v) for v in await client.lrange(keys.dispatch_latency(), 0, 199)]
    turns = [float(v) for v in await client.lrange(keys.turn_latency(), 0, 199)]
    return {
        "active_calls": sum(load for _w, load in workers),
        "capacity": sum(w.capacity for w, _load in workers if not w.draining),
        "queue_length": await queue.waiting(),
        "jobs_pending_ack": await queue.pending(),
        "workers": [
            {
                "worker_id": w.worker_id,
                "capacity": w.capacity,
                "load": load,
                "draining": w.draining,
                "heartbeat_age_secs": round(now - w.heartbeat_at, 3),
                "media_url": w.media_url,
            }
            for w, load in workers
        ],
        "dispatch_latency_ms": percentiles(dispatch),
        "turn_latency_ms": percentiles(turns),
    }
