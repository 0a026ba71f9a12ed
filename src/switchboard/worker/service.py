"""A worker in the pool: registers, heartbeats, claims jobs while it has room, drains on SIGTERM."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as redis
from loguru import logger

from switchboard.agent.config import AgentConfig
from switchboard.call.record import RecentCalls
from switchboard.dispatch import keys
from switchboard.dispatch.admission import ClosedReason, HeadroomBoard, HeadroomReport
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.connection import connect
from switchboard.dispatch.models import CallStatus, Job, WorkerInfo
from switchboard.dispatch.queue import JobQueue
from switchboard.dispatch.redemptions import StreamRedemptions
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.dispatch.sessions import CallSessions
from switchboard.observability import metrics
from switchboard.observability.headroom import LOOP_LAG_MS
from switchboard.observability.logging import call_context
from switchboard.settings import Settings
from switchboard.worker.headroom import HeadroomMeter
from switchboard.worker.jobs import run_job

if TYPE_CHECKING:
    from switchboard.call.host import CallHost

_CLAIM_BLOCK_MS = 1000
_CLAIM_BATCH = 16
_LATENCY_SAMPLES = 1000


@dataclass
class _Running:
    job: Job
    msg_id: str
    task: asyncio.Task = field(repr=False)


class WorkerService:
    """The Redis side of one worker process; the HTTP side lives in ``worker.app``."""

    def __init__(self, settings: Settings, agent: AgentConfig, *, worker_id: str, media_url: str):
        self.settings = settings
        self.agent = agent
        # The agents room jobs choose from; the worker app sets its agents dir here.
        self.worker_id = worker_id
        self.redis: redis.Redis = connect(settings.redis_url)
        self.queue = JobQueue(self.redis)
        self.registry = WorkerRegistry(self.redis, settings.worker_ttl_secs)
        self.headroom = HeadroomBoard(self.redis, settings.worker_ttl_secs)
        # None with admission=slots: the worker then publishes no report and admits to max_calls.
        self.meter = HeadroomMeter(settings) if settings.admission == "headroom" else None
        self.ledger = CallLedger(self.redis, settings.call_state_ttl_secs)
        self.calls = RecentCalls()
        # Admits room jobs like every other call; the worker app sets it (worker.app.WorkerParts).
        self.host: CallHost | None = None
        self.info = WorkerInfo(
            worker_id=worker_id,
            media_url=media_url,
            capacity=settings.max_calls,
            webrtc_capacity=settings.webrtc_max_calls,
            pid=os.getpid(),
            started_at=time.time(),
            heartbeat_at=time.time(),
        )
        self._jobs: dict[str, _Running] = {}
        self.stream_calls: set[asyncio.Task] = set()
        self._hand_offs: dict[asyncio.Task, Callable[[], None]] = {}
        self.sessions = CallSessions(self.redis, settings.call_session_ttl_secs)
        self.redemptions = StreamRedemptions(self.redis)
        self._loops: list[asyncio.Task] = []
        self._room = asyncio.Event()
        self._room.set()
        self.draining = False

    @property
    def active(self) -> int:
        return len(self._jobs) + len(self.stream_calls)

    async def start(self) -> None:
        await self.queue.ensure_group()
        # The report goes first: registered without one, the worker would admit to max_calls.
        await self._report_headroom(load=0)
        await self.registry.register(self.info)
        metrics.WORKER_CAPACITY.set(self.settings.max_calls)
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._claim_loop(), name="claim"),
            asyncio.create_task(self._reclaim_loop(), name="reclaim"),
            asyncio.create_task(_event_loop_lag_monitor(), name="loop-lag"),
        ]
        logger.info(f"worker {self.worker_id} registered: {self.settings.max_calls} slots at {self.info.media_url}")

    async def drain(self) -> None:
        """Stop taking calls, let live ones finish up to the deadline, then leave the pool."""
        self.draining = True
        self.info.draining = True
        await self._safe(self.registry.heartbeat(self.info))
        self._cancel_loop("claim")
        self._cancel_loop("reclaim")
        await self._await_reserved_streams()
        live = [r.task for r in self._jobs.values()] + list(self.stream_calls)
        if live:
            logger.info(f"draining: {len(live)} live call(s), up to {self.settings.drain_timeout_secs:.0f} s")
            _done, pending = await asyncio.wait(live, timeout=self.settings.drain_timeout_secs)
            for task in pending:
                if (hand_off := self._hand_offs.get(task)) is not None:
                    hand_off()
                task.cancel()
            if pending:
                logger.warning(f"drain timed out: {len(pending)} call(s) handed off or ended")
                await asyncio.wait(pending, timeout=5)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._safe(self.registry.deregister(self.worker_id))
        await self.redis.aclose()
        logger.info(f"worker {self.worker_id} drained and deregistered")

    def _cancel_loop(self, name: str) -> None:
        for task in self._loops:
            if task.get_name() == name:
                task.cancel()

    def _update_room(self) -> None:
        if self.active < self.settings.max_calls:
            self._room.set()
        else:
            self._room.clear()
        metrics.WORKER_LOAD.set(self.active)

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._safe(self.registry.heartbeat(self.info))
            await self._safe(self._report_headroom())
            await self._safe(self.queue.refresh(self.worker_id, [r.msg_id for r in self._jobs.values()]))
            await asyncio.sleep(self.settings.heartbeat_interval_secs)

    def _claimable(self) -> int:
        """Room jobs this worker may claim now: its slots, within its own headroom."""
        limit = self.settings.max_calls
        if self.meter is not None and self.meter.last is not None:
            report = self.meter.last
            limit = min(limit, report.admit_until) if report.open else 0
        return limit - self.active

    async def _report_headroom(self, load: int | None = None) -> None:
        """Measure, decide and publish this worker's headroom (admission=headroom only)."""
        if self.meter is None:
            return
        if load is None:
            load = int(await self.redis.get(keys.worker_load(self.worker_id)) or 0)
        report = self.meter.assess(load)
        await self.headroom.publish(self.worker_id, report)
        _export(report)

    async def _claim_loop(self) -> None:
        while True:
            await self._room.wait()
            free = self._claimable()
            if free <= 0:
                await asyncio.sleep(self.settings.heartbeat_interval_secs)
                continue
            try:
                # A burst is claimed in one read and its bookkeeping runs concurrently.
                claimed = await self.queue.claim(self.worker_id, _CLAIM_BLOCK_MS, count=min(free, _CLAIM_BATCH))
            except redis.RedisError as e:
                logger.warning(f"claim failed ({e}); retrying")
                await asyncio.sleep(1)
                continue
            results = await asyncio.gather(*(self._start_job(*c) for c in claimed), return_exceptions=True)
            for (_msg_id, job), result in zip(claimed, results, strict=True):
                if isinstance(result, Exception):
                    # Unacknowledged, so it will be reclaimed once our refresh stops covering it.
                    logger.warning(f"could not start job {job.job_id}: {result}")

    async def _reclaim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_secs)
            if self._claimable() <= 0:
                continue
            try:
                for msg_id, job in await self.queue.reclaim(self.worker_id, self.settings.reclaim_idle_secs):
                    await self._start_job(msg_id, job)
            except redis.RedisError as e:
                logger.warning(f"reclaim failed: {e}")

    async def _start_job(self, msg_id: str, job: Job) -> None:
        with call_context(job.call_id):
            await self._start_job_in_context(msg_id, job)

    async def _start_job_in_context(self, msg_id: str, job: Job) -> None:
        verdict = await self.ledger.take(job.call_id, self.worker_id)
        if verdict == "done":
            await self.queue.ack(msg_id)
            return
        if verdict == "owned":
            return  # a live worker runs it; its refresh moves the entry back to it
        if not await self.registry.take_slot(self.worker_id):
            # Our slots went to Twilio reservations meanwhile: give the job back.
            await self.ledger.record(job.call_id, CallStatus.QUEUED, owner="")
            await self.queue.requeue(msg_id, job)
            return
        metrics.JOBS_CLAIMED.labels(kind=job.kind.value).inc()
        latency_ms = (time.time() - job.created_at) * 1000
        metrics.DISPATCH_LATENCY_MS.observe(latency_ms)
        await self._safe(self._push_sample(keys.dispatch_latency(), latency_ms))
        await self.ledger.record(job.call_id, CallStatus.RUNNING, worker=self.worker_id, claim_ms=round(latency_ms, 2))
        task = asyncio.create_task(self._run_job(msg_id, job), name=f"job-{job.job_id}")
        self._jobs[job.job_id] = _Running(job, msg_id, task)
        self._update_room()

    async def _run_job(self, msg_id: str, job: Job) -> None:
        with call_context(job.call_id):
            await self._run_job_in_context(msg_id, job)

    async def _run_job_in_context(self, msg_id: str, job: Job) -> None:
        status = CallStatus.COMPLETED
        try:
            # "Ready": the job's own code starts; for a room job, the agent begins joining.
            # (RUNNING itself was written when the job was claimed.)
            ready_ms = round((time.time() - job.created_at) * 1000, 2)
            await self._safe(self.ledger.note(job.call_id, ready_ms=ready_ms))
            assert self.host is not None, "the worker app sets the call host before starting"
            record = await run_job(job, self.host)
            if record is not None and record.outcome != "completed":
                status = CallStatus.FAILED
        except asyncio.CancelledError:
            status = CallStatus.FAILED
            raise
        except Exception as e:  # one call's failure never touches another
            status = CallStatus.FAILED
            metrics.PIPELINE_ERRORS.labels(stage="job").inc()
            logger.exception(f"job {job.job_id} ({job.call_id}) failed: {e}")
        finally:
            self._jobs.pop(job.job_id, None)
            self._update_room()
            await self._safe(self.ledger.finish(job.call_id, status))
            await self._safe(self.queue.ack(msg_id))
            await self._safe(self.registry.release_slot(self.worker_id))
            if self.calls.get(job.call_id) is None:  # a call the runner ran is counted there
                metrics.CALLS_TOTAL.labels(outcome=status.value).inc()

    def track_stream_call(self, task: asyncio.Task) -> None:
        self.stream_calls.add(task)
        self._update_room()

        def _done(t: asyncio.Task) -> None:
            self.stream_calls.discard(t)
            self._hand_offs.pop(t, None)
            self._update_room()

        task.add_done_callback(_done)

    def on_hand_off(self, task: asyncio.Task, hand_off: Callable[[], None]) -> None:
        """What to do before a drain out of time cancels ``task``: make its call go on elsewhere."""
        self._hand_offs[task] = hand_off
        task.add_done_callback(lambda t: self._hand_offs.pop(t, None))  # room jobs' tasks too

    async def _await_reserved_streams(self) -> None:
        """Slots the orchestrators reserved here before the drain began are calls on their way:
        wait for their streams to arrive (or the reservations to lapse) before counting live calls."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self.settings.reservation_ttl_secs, self.settings.drain_timeout_secs)
        while loop.time() < deadline:
            try:
                if not await self.registry.pending_reservations(self.worker_id):
                    return
            except (redis.RedisError, OSError) as e:
                logger.warning(f"drain: cannot read reservations: {e}")
                return
            await asyncio.sleep(0.05)

    async def _push_sample(self, key: str, value: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(key, round(value, 2))
            pipe.ltrim(key, 0, _LATENCY_SAMPLES - 1)
            await pipe.execute()

    async def record_turn_latency(self, value_ms: float) -> None:
        await self._safe(self._push_sample(keys.turn_latency(), value_ms))

    @staticmethod
    async def _safe(coro) -> None:
        """Redis hiccups must not kill a worker's housekeeping; they are logged and retried later."""
        try:
            await coro
        except (redis.RedisError, OSError) as e:
            logger.warning(f"redis operation failed: {e}")


# all_tasks() walks every task (~0.3 µs each): once a second, not on every lag tick.
_TASK_COUNT_EVERY = 4


async def _event_loop_lag_monitor(period: float = 0.25) -> None:
    """Blocking work on the event loop delays every call's audio; measure how late timers fire.

    Also counts the loop's unfinished tasks (``event_loop_tasks``), so a soak shows tasks leaking.
    """
    loop = asyncio.get_running_loop()
    for tick in itertools.count():
        if tick % _TASK_COUNT_EVERY == 0:
            metrics.EVENT_LOOP_TASKS.set(len(asyncio.all_tasks(loop)))
        expected = loop.time() + period
        await asyncio.sleep(period)
        lag = max(0.0, loop.time() - expected)
        metrics.EVENT_LOOP_LAG_SECONDS.observe(lag)
        LOOP_LAG_MS.add(lag * 1000)


def _export(report: HeadroomReport) -> None:
    """The report as this worker's Prometheus gauges."""
    metrics.WORKER_HEADROOM_OPEN.set(1 if report.open else 0)
    metrics.WORKER_ADMIT_UNTIL.set(report.admit_until)
    metrics.WORKER_TURN_P95_MS.set(report.p95_ms or 0)
    for reason in ClosedReason:
        metrics.WORKER_ADMISSION_CLOSED.labels(reason=reason.value).set(1 if report.reason is reason else 0)
