"""A call's slot in the worker pool: held in Redis while the call runs, released once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchboard.dispatch.models import CallStatus
from switchboard.worker.calls import CallRecord

if TYPE_CHECKING:
    from switchboard.worker.service import WorkerService


class PoolSlot:
    """The slot a stream or browser call took on this worker (not a queued job's: the service
    releases those together with their queue entry)."""

    def __init__(self, service: WorkerService, call_id: str):
        self._service = service
        self._call_id = call_id
        self._released = False

    async def release(self, record: CallRecord | None) -> None:
        """Free the slot and write the call's outcome and turn latencies; None: it never ran."""
        if self._released:
            return
        self._released = True
        service = self._service
        status = CallStatus.FAILED
        if record is not None:
            status = CallStatus.COMPLETED if record.outcome == "completed" else CallStatus.FAILED
            for turn in record.turns:
                if turn.get("bot_started_ms") is not None:
                    await service.record_turn_latency(turn["bot_started_ms"])
        await service._safe(service.registry.release_slot(service.worker_id, self._call_id))
        await service._safe(service.ledger.finish(self._call_id, status))
