"""The numbers behind ``GET /stats``: calls, queue, workers and recent latency percentiles."""

from __future__ import annotations

import time

import numpy as np
import redis.asyncio as redis

from switchboard.dispatch import keys
from switchboard.dispatch.admission import HeadroomBoard, HeadroomReport
from switchboard.dispatch.hold import HoldLine
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


def _headroom(report: HeadroomReport | None, now: float) -> dict | None:
    """A worker's headroom as ``/stats`` shows it (None: it admits by slots)."""
    if report is None:
        return None
    return {
        "open": report.open,
        "closed_reason": report.reason.value if report.reason else None,
        "admit_until": report.admit_until,
        "p95_ms": None if report.p95_ms is None else round(report.p95_ms, 1),
        "turns_in_window": report.turns,
        "lag_ms": report.lag_ms,
        "cpu": report.cpu,
        "engine_queue": report.engine_queue,
        "age_secs": round(now - report.at, 3),
    }


def _admits(capacity: int, load: int, draining: bool, report: HeadroomReport | None) -> int:
    """How many more calls a worker admits now, by the rule placements apply (dispatch.admission)."""
    if draining or (report is not None and not report.open):
        return 0
    limit = capacity if report is None else min(capacity, report.admit_until)
    return max(0, limit - load)


async def collect_stats(
    client: redis.Redis, queue: JobQueue, registry: WorkerRegistry, headroom: HeadroomBoard, hold: HoldLine
) -> dict:
    now = time.time()
    workers = await registry.live_workers()
    reports = await headroom.reports([w.worker_id for w, _load in workers])
    admits = [_admits(w.capacity, load, w.draining, reports.get(w.worker_id)) for w, load in workers]
    dispatch = [float(v) for v in await client.lrange(keys.dispatch_latency(), 0, 199)]
    turns = [float(v) for v in await client.lrange(keys.turn_latency(), 0, 199)]
    return {
        "active_calls": sum(load for _w, load in workers),
        "capacity": sum(w.capacity for w, _load in workers if not w.draining),
        "queue_length": await queue.waiting(),
        "jobs_pending_ack": await queue.pending(),
        "admission": {
            "open_workers": sum(1 for n in admits if n > 0),
            "admits_now": sum(admits),
            "hold_queue_length": await hold.length(),
            "hold_oldest_wait_secs": round(await hold.oldest_wait(now), 1),
        },
        "workers": [
            {
                "worker_id": w.worker_id,
                "capacity": w.capacity,
                "load": load,
                "draining": w.draining,
                "heartbeat_age_secs": round(now - w.heartbeat_at, 3),
                "media_url": w.media_url,
                "headroom": _headroom(reports.get(w.worker_id), now),
            }
            for w, load in workers
        ],
        "dispatch_latency_ms": percentiles(dispatch),
        "turn_latency_ms": percentiles(turns),
    }
