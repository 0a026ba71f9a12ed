"""A call's slot in the worker pool: held in Redis while the call runs, released once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as redis
from loguru import logger

from switchboard.dispatch.models import CallStatus
from switchboard.observability import metrics
from switchboard.worker.calls import CallRecord

if TYPE_CHECKING:
    from switchboard.worker.service import WorkerService


_STATUS_OF_OUTCOME = {"completed": CallStatus.COMPLETED, "abandoned": CallStatus.ABANDONED}


class PoolSlot:
    """The slot a stream or browser call took on this worker (not a queued job's: the service
    releases those together with their queue entry)."""

    def __init__(self, service: WorkerService, call_id: str, *, held: bool = True):
        """``held=False``: the call takes its slot later (``take``), a browser call once its peer
        connection is up."""
        self._service = service
        self._call_id = call_id
        self._held = held
        self._released = False

    async def take(self) -> bool:
        """Take a free slot now; False if the worker has none (or Redis is unreachable)."""
        service = self._service
        try:
            self._held = await service.registry.take_slot(service.worker_id)
        except (redis.RedisError, OSError) as e:
            logger.warning(f"{self._call_id}: cannot take a slot: {e}")
            return False
        if not self._held:
            metrics.CALLS_REJECTED.labels(reason="worker_full").inc()
            logger.warning(f"{self._call_id}: the worker has no free slot")
        return self._held

    async def release(self, record: CallRecord | None) -> None:
        """Free the slot and write the call's outcome and turn latencies; None: it never ran."""
        if self._released:
            return
        self._released = True
        service = self._service
        status = CallStatus.FAILED
        if record is not None:
            status = _STATUS_OF_OUTCOME.get(record.outcome, CallStatus.FAILED)
            for turn in record.turns:
                if turn.get("bot_started_ms") is not None:
                    await service.record_turn_latency(turn["bot_started_ms"])
        if self._held:
            await service._safe(service.registry.release_slot(service.worker_id, self._call_id))
        await service._safe(service.ledger.finish(self._call_id, status))
