"""Load generator: many simulated Twilio callers at once, with ramp-up, in one or more processes.

Each of ``concurrency`` caller slots places calls back to back (a closed loop, so the agent sees
a steady number of calls) from its ramp-up start until the call budget or the duration runs out.
Calls are the caller simulator's, without transcription: the only model the caller side runs
live is the VAD that measures each clip once per process, before the clock starts. Clarity is
judged after the load, from the sampled recordings.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel, Field

from switchboard.loadtest.caller import CallScript, preload_clips, run_call
from switchboard.loadtest.clarity import ClarityJudge, ClarityTurn
from switchboard.loadtest.report import CallOutcome, CallResult
from switchboard.loadtest.scenario import Scenario, ScenarioOptions

LOADTEST_VERSION = 1
_PROCESS_START_TIMEOUT_S = 120.0


class Targets(BaseModel):
    """The seed's goals, drawn on every plot and checked in the summary."""

    p95_ms: float = 600.0
    success_rate: float = 0.95
    clarity: float = 0.90


class LoadTestConfig(BaseModel):
    """One load test: where, how many callers, for how long, and what to keep."""

    url: str
    concurrency: int = Field(default=4, ge=1, description="Caller slots placing calls at once")
    ramp_up_s: float = Field(default=0.0, ge=0, description="Slot i starts at i/N of this")
    duration_s: float | None = Field(default=None, description="No call starts after this")
    calls: int | None = Field(
        default=None, ge=1, description="Total calls; default one per slot without a duration"
    )
    seed: int = 0
    turn_deadline_ms: int = Field(default=3_000, description="A slower reply fails the call")
    record_fraction: float = Field(default=0.1, ge=0, le=1, description="Calls recorded (WAV)")
    max_recordings: int = Field(default=20, ge=0)
    processes: int = Field(default=1, ge=1, description="Caller processes the slots are split over")
    auth_token: str | None = None
    twilio_api: str | None = Field(
        default=None, description="The Twilio REST emulator: callers follow REST updates (hold queue, transfers)"
    )
    network_timeout_s: float = 10.0
    max_call_s: float = 300.0
    out_dir: Path = Path("loadtest")
    scenario: ScenarioOptions = Field(default_factory=ScenarioOptions)

    def call_budget(self) -> int | None:
        if self.calls is not None:
            return self.calls
        return None if self.duration_s is not None else self.concurrency

    def recorded(self, index: int) -> bool:
        """Evenly spaced sample of calls, the first included, at most max_recordings."""
        f = self.record_fraction
        upto = math.ceil(round((index + 1) * f, 9))
        return upto > math.ceil(round(index * f, 9)) and upto <= self.max_recordings


class CallVerdict(BaseModel):
    """Whether a call did what a caller needs, and if not, the first thing that went wrong."""

    connected: bool
    greeted: bool
    turns: int
    turns_answered: int = Field(description="Turns the agent replied to within the deadline")
    hung_up_cleanly: bool
    success: bool
    reason: str | None = None


class CallRecord(BaseModel):
    """One call of the load test: when it started (seconds after the run began) and its result."""

    index: int
    offset_s: float
    verdict: CallVerdict
    result: CallResult


def judge(result: CallResult, deadline_ms: float) -> CallVerdict:
    """Connected, greeted, every turn answered within the deadline, hung up cleanly."""
    connected = result.stream_sid is not None
    greeted = result.greeting is not None
    in_time = [
        t for t in result.turns if t.voice_to_voice_ms is not None and t.voice_to_voice_ms <= deadline_ms
    ]
    clean = result.outcome in (CallOutcome.COMPLETED, CallOutcome.AGENT_HUNG_UP, CallOutcome.TRANSFERRED)
    reason = None
    if not connected:
        reason = result.reason or "not_connected"
    elif not greeted:
        reason = result.reason or "no_greeting"
    elif any(t.failure for t in result.turns):
        reason = next(t.failure for t in result.turns if t.failure)
    elif len(in_time) < len(result.turns):
        reason = "slow_reply"
    elif not clean:
        reason = result.reason or result.outcome.value
    return CallVerdict(
        connected=connected,
        greeted=greeted,
        turns=len(result.turns),
        turns_answered=len(in_time),
        hung_up_cleanly=clean,
        success=reason is None,
        reason=reason,
    )


@dataclass(frozen=True)
class _Shard:
    """The slots and call budget of one caller process; call indices are index + processes*k."""

    index: int
    processes: int
    slots: tuple[int, ...]
    budget: int | None


def _shards(config: LoadTestConfig) -> list[_Shard]:
    n = min(config.processes, config.concurrency)
    total = config.call_budget()
    return [
        _Shard(
            index=p,
            processes=n,
            slots=tuple(range(p, config.concurrency, n)),
            budget=None if total is None else (total - p + n - 1) // n,
        )
        for p in range(n)
    ]


Emit = Callable[[dict[str, Any]], None]


async def _run_shard(config: LoadTestConfig, shard: _Shard, t0: float, emit: Emit) -> None:
    """Run one shard's caller slots; emits ``start`` and ``end`` events, then ``done``."""
    scenario = Scenario(
        config.scenario, seed=config.seed, reply_timeout_ms=config.turn_deadline_ms + 2_000
    )
    cpu0 = time.process_time()
    stop_at = None if config.duration_s is None else t0 + config.duration_s
    placed = itertools.count()
    limits = httpx.Limits(max_connections=len(shard.slots) + 4)

    async def slot(s: int, client: httpx.AsyncClient) -> None:
        await asyncio.sleep(max(0.0, t0 + s * config.ramp_up_s / config.concurrency - time.monotonic()))
        while stop_at is None or time.monotonic() < stop_at:
            k = next(placed)
            if shard.budget is not None and k >= shard.budget:
                return
            index = shard.index + shard.processes * k
            offset = time.monotonic() - t0
            emit({"kind": "start", "index": index, "t": offset})
            result = await _one_call(config, scenario.script(index), index, client)
            record = CallRecord(
                index=index,
                offset_s=round(offset, 3),
                verdict=judge(result, config.turn_deadline_ms),
                result=result,
            )
            emit({"kind": "end", "index": index, "t": time.monotonic() - t0,
                  "record": record.model_dump(mode="json")})

    async with httpx.AsyncClient(timeout=config.network_timeout_s, limits=limits) as client:
        await asyncio.gather(*(slot(s, client) for s in shard.slots))
    emit({"kind": "done", "shard": shard.index, "cpu_s": time.process_time() - cpu0})


async def _one_call(
    config: LoadTestConfig, script: CallScript, index: int, client: httpx.AsyncClient
) -> CallResult:
    record_path = config.out_dir / "recordings" / f"call-{index:05d}.wav"
    try:
        return await run_call(
            config.url,
            script,
            auth_token=config.auth_token,
            record_path=record_path if config.recorded(index) else None,
            transcribe=False,
            http_client=client,
            network_timeout_s=config.network_timeout_s,
            max_call_s=config.max_call_s,
            twilio_api=config.twilio_api,
        )
    except Exception as exc:  # a simulator bug must cost one call, not the whole run
        return CallResult(
            call_sid=f"error-{index}",
            base_url=config.url,
            outcome=CallOutcome.FAILED,
            reason=f"simulator_error: {type(exc).__name__}: {exc}"[:200],
            started_at=datetime.now(UTC),
            duration_s=0.0,
            unknown_messages=[traceback.format_exc()[-400:]],
        )


class Progress(BaseModel):
    """What the terminal shows while the test runs."""

    elapsed_s: float
    active: int
    done: int
    failed: int
    p50_ms: float | None
    p95_ms: float | None


class _Collector:
    """Gathers events from every shard into records, live counts and CPU time."""

    def __init__(self) -> None:
        self.active: set[int] = set()
        self.records: list[CallRecord] = []
        self.latencies: list[float] = []
        self.cpu_s = 0.0
        self.shards_done = 0
        self.t0 = time.monotonic()

    def handle(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "start":
            self.active.add(event["index"])
        elif kind == "end":
            self.active.discard(event["index"])
            record = CallRecord.model_validate(event["record"])
            self.records.append(record)
            self.latencies += [
                t.voice_to_voice_ms for t in record.result.turns if t.voice_to_voice_ms is not None
            ]
        elif kind == "done":
            self.cpu_s += event["cpu_s"]
            self.shards_done += 1

    def snapshot(self) -> Progress:
        lat = np.asarray(self.latencies) if self.latencies else None
        return Progress(
            elapsed_s=round(time.monotonic() - self.t0, 1),
            active=len(self.active),
            done=len(self.records),
            failed=sum(not r.verdict.success for r in self.records),
            p50_ms=None if lat is None else float(np.percentile(lat, 50)),
            p95_ms=None if lat is None else float(np.percentile(lat, 95)),
        )


async def _in_process(
    config: LoadTestConfig, shard: _Shard, collector: _Collector,
    on_progress: Callable[[Progress], None] | None, interval_s: float,
) -> None:
    async def report() -> None:
        while True:
            await asyncio.sleep(interval_s)
            on_progress(collector.snapshot())  # type: ignore[misc]

    reporter = asyncio.create_task(report()) if on_progress else None
    try:
        await _run_shard(config, shard, collector.t0, collector.handle)
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)


def _shard_main(config_json: str, shard: _Shard, events: Any, go: Any, t0: Any) -> None:
    """Entry point of a caller process: load clips, report ready, wait for the common start."""
    config = LoadTestConfig.model_validate_json(config_json)
    preload_clips(Scenario(config.scenario, seed=config.seed).clips())
    events.put({"kind": "ready", "shard": shard.index})
    go.wait()
    asyncio.run(_run_shard(config, shard, t0.value, events.put))


def _multi_process(
    config: LoadTestConfig, shards: list[_Shard], collector: _Collector,
    on_progress: Callable[[Progress], None] | None, interval_s: float,
) -> None:
    ctx = mp.get_context("spawn")
    events, go, t0 = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=_shard_main, args=(config.model_dump_json(), s, events, go, t0),
                    name=f"loadgen-{s.index}", daemon=True)
        for s in shards
    ]
    for p in procs:
        p.start()
    try:
        ready, deadline = 0, time.monotonic() + _PROCESS_START_TIMEOUT_S
        while ready < len(procs):
            if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a load generator process failed to start")
            try:
                ready += events.get(timeout=0.5)["kind"] == "ready"
            except queue.Empty:
                continue
        collector.t0 = t0.value = time.monotonic()
        go.set()
        next_report = collector.t0 + interval_s
        while collector.shards_done < len(procs):
            try:
                collector.handle(events.get(timeout=min(interval_s, 0.5)))
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("a load generator process died") from None
            if on_progress and time.monotonic() >= next_report:
                on_progress(collector.snapshot())
                next_report += interval_s
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()


class LoadTestRun(BaseModel):
    """The raw outcome of a load test, before summarising."""

    version: int = LOADTEST_VERSION
    config: LoadTestConfig
    started_at: datetime
    wall_s: float
    cpu_s: float = Field(description="Caller-side CPU seconds during the load, all processes")
    calls: list[CallRecord]
    clarity: list[ClarityTurn] = Field(default_factory=list)


def run_load_test(
    config: LoadTestConfig,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval_s: float = 1.0,
    clarity_judge: ClarityJudge | None = None,
) -> LoadTestRun:
    """Run the load, then (given a judge) score the clarity of the recorded calls."""
    started_at = datetime.now(UTC)
    collector = _Collector()
    shards = _shards(config)
    if len(shards) == 1:
        preload_clips(Scenario(config.scenario, seed=config.seed).clips())
        collector.t0 = time.monotonic()
        asyncio.run(_in_process(config, shards[0], collector, on_progress, progress_interval_s))
    else:
        _multi_process(config, shards, collector, on_progress, progress_interval_s)
    wall_s = time.monotonic() - collector.t0
    if on_progress:
        on_progress(collector.snapshot())
    records = sorted(collector.records, key=lambda r: r.index)
    run = LoadTestRun(
        config=config, started_at=started_at, wall_s=round(wall_s, 3),
        cpu_s=round(collector.cpu_s, 3), calls=records,
    )
    if clarity_judge is not None:
        run.clarity = [
            turn
            for r in records
            if r.result.recording and Path(r.result.recording).exists()
            for turn in clarity_judge.score_recording(r.result, Path(r.result.recording))
        ]
    return run
