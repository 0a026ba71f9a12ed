"""A worker's headroom: from what it measures, whether another call will still meet the objective.

Each heartbeat the worker reads its windows (:mod:`switchboard.observability.headroom`: turn
latency p95, event-loop lag p95, local engine requests in flight) and the machine's CPU use,
:func:`assess` turns them into a :class:`~switchboard.dispatch.admission.HeadroomReport`, and
the report goes to Redis where every placement reads it atomically. The rule:

* a worker with no call is open (nothing it measures is caused by calls, and a pool that never
  admits anything cannot measure anything);
* otherwise it closes when any signal is over its limit, naming the first: ``latency`` (p95 at
  ``admission_latency_margin`` of the objective), ``lag``, ``cpu``, ``engine_queue``; and at the
  hard ceiling (``max_calls``), ``ceiling``;
* an open worker admits up to ``admission_burst`` calls beyond its load until its next report,
  fewer when its CPU per call says fewer fit, one at a time when latency is close to the limit;
* and no more than ``admission_burst`` over any ``admission_settle_secs``: a new call costs
  little until its caller speaks, so its latency and CPU show only seconds after it was let in,
  and a ramp faster than that would be judged on measurements that do not include it yet;
* and never above the load it learned it can hold (:class:`LearnedLimit`): the signals show an
  overload seconds after the calls that caused it, so without a memory a worker reopens as soon
  as its window clears and overshoots again, over and over.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from switchboard.dispatch.admission import ClosedReason, HeadroomReport
from switchboard.observability import headroom as windows
from switchboard.settings import Settings

# Fewer turns than this in the window say nothing about p95.
_MIN_TURNS = 5
# Above this share of the latency limit, calls are added one report at a time.
_CAUTIOUS_SHARE = 0.75


@dataclass(frozen=True)
class HeadroomLimits:
    """The settings admission is judged by."""

    latency_limit_ms: float
    lag_limit_ms: float
    cpu_limit: float
    engine_queue_limit: int
    ceiling: int
    burst: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadroomLimits:
        return cls(
            latency_limit_ms=settings.latency_objective_ms * settings.admission_latency_margin,
            lag_limit_ms=settings.admission_lag_limit_ms,
            cpu_limit=settings.admission_cpu_limit,
            engine_queue_limit=settings.admission_engine_queue_limit,
            ceiling=settings.max_calls,
            burst=settings.admission_burst,
        )


@dataclass(frozen=True)
class Measurements:
    """One reading of the worker's signals."""

    load: int
    p95_ms: float | None
    turns: int
    lag_ms: float
    cpu: float
    engine_queue: int
    recent_admissions: int = 0  # the load's growth over the settle window


def assess(m: Measurements, limits: HeadroomLimits, at: float) -> HeadroomReport:
    """The admission decision for these measurements (see the module docstring)."""

    def report(open_: bool, admit_until: int, reason: ClosedReason | None = None) -> HeadroomReport:
        return HeadroomReport(
            open=open_, admit_until=admit_until, reason=reason, load=m.load, p95_ms=m.p95_ms,
            turns=m.turns, lag_ms=round(m.lag_ms, 1), cpu=round(m.cpu, 3), engine_queue=m.engine_queue, at=at,
        )

    if m.load >= limits.ceiling:
        return report(False, limits.ceiling, ClosedReason.CEILING)
    if m.load > 0:
        for reason, over in (
            (ClosedReason.LATENCY, m.p95_ms is not None and m.p95_ms >= limits.latency_limit_ms),
            (ClosedReason.LAG, m.lag_ms >= limits.lag_limit_ms),
            (ClosedReason.CPU, m.cpu >= limits.cpu_limit),
            (ClosedReason.ENGINE_QUEUE, m.engine_queue >= limits.engine_queue_limit),
        ):
            if over:
                return report(False, m.load, reason)
    extra = limits.burst
    if m.load > 0 and m.cpu > 0:
        per_call = m.cpu / m.load
        extra = min(extra, max(1, math.floor((limits.cpu_limit - m.cpu) / per_call)))
    if m.p95_ms is not None and m.p95_ms >= _CAUTIOUS_SHARE * limits.latency_limit_ms:
        extra = 1
    if m.load > 0:
        extra = min(extra, max(0, limits.burst - m.recent_admissions))
    return report(True, min(limits.ceiling, m.load + extra))


# A limit broken at load L: L x this is what the worker holds next (multiplicative decrease).
_DECREASE = 0.85


class LearnedLimit:
    """The load this worker holds within its limits, learned as TCP learns a path's capacity
    (additive increase, multiplicative decrease): breaking a limit at load L sets it to
    0.85 x L; each settle window spent at it with every signal inside raises it by one.

    One cut per latency window: the p95 lags the calls that raised it, so until the window has
    turned over the readings after a cut still show the load before it. Starts at the ceiling:
    nothing is assumed about a machine until it is measured."""

    def __init__(self, ceiling: int, settle_secs: float, window_secs: float):
        self.value = float(ceiling)
        self._ceiling = ceiling
        self._settle_secs = settle_secs
        self._window_secs = max(settle_secs, window_secs)
        self._cut_at = -math.inf
        self._raised_at = -math.inf

    def allows(self) -> int:
        return max(1, math.floor(self.value))

    def update(self, report: HeadroomReport, within: bool, now: float) -> None:
        """Learn from one assessment: ``within`` when every signal is inside its limit, latency
        measured."""
        if not report.open and report.reason in _OVERLOAD and report.load > 0:
            if now - self._cut_at >= self._window_secs:
                self.value = max(1.0, min(self.value, report.load) * _DECREASE)
                self._cut_at = now
        elif (
            within and report.load >= self.allows() and self.value < self._ceiling
            and now - max(self._cut_at, self._raised_at) >= self._settle_secs
        ):
            self.value = min(float(self._ceiling), self.value + 1)
            self._raised_at = now


_OVERLOAD = (ClosedReason.LATENCY, ClosedReason.LAG, ClosedReason.CPU, ClosedReason.ENGINE_QUEUE)


# Latency under this share of its limit at the learned load: room to try one more call.
_RAISE_SHARE = 0.9


def within_limits(m: Measurements, limits: HeadroomLimits) -> bool:
    """Every signal inside its limit, latency measured over enough turns: room to try one more
    call than the learned limit (calls that have not spoken yet prove nothing)."""
    return (
        m.p95_ms is not None and m.p95_ms < _RAISE_SHARE * limits.latency_limit_ms
        and m.lag_ms < limits.lag_limit_ms
        and m.cpu < limits.cpu_limit
        and m.engine_queue < limits.engine_queue_limit
    )


class CpuMeter:
    """The CPU use (0-1) this worker can draw on, since the last reading: its container's share
    when the cgroup has a CPU quota (a Kubernetes limit: ``/proc/stat`` would show the whole
    node), else the machine's from ``/proc/stat``, else the 1-minute load average per core."""

    def __init__(
        self, stat: Path = Path("/proc/stat"), cgroup: Path = Path("/sys/fs/cgroup"),
        clock=time.monotonic,
    ):
        self._stat = stat
        self._clock = clock
        self._cores = _cgroup_cores(cgroup / "cpu.max")
        self._usage = cgroup / "cpu.stat"
        self._last = self._times()

    def _times(self) -> tuple[float, float] | None:
        """(busy, total) in any unit: the cgroup's CPU µs and the quota's µs of wall, or jiffies."""
        if self._cores is not None:
            try:
                usage = next(
                    float(line.split()[1]) for line in self._usage.read_text().splitlines()
                    if line.startswith("usage_usec ")
                )
            except (OSError, StopIteration, ValueError, IndexError):
                return None
            return usage, self._clock() * 1e6 * self._cores
        try:
            fields = self._stat.read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        values = [float(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0.0)
        total = sum(values[:8])
        return total - idle, total

    def read(self) -> float:
        now = self._times()
        if now is None or self._last is None:
            return min(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
        busy, total = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return 0.0 if total <= 0 else max(0.0, min(1.0, busy / total))


def _cgroup_cores(cpu_max: Path) -> float | None:
    """The cores a cgroup v2 quota allows (``cpu.max``: "200000 100000" is 2); None without one."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return float(quota) / float(period)


class HeadroomMeter:
    """Reads this process's signals and decides its headroom."""

    def __init__(self, settings: Settings, cpu: CpuMeter | None = None, clock=time.monotonic):
        self.limits = HeadroomLimits.from_settings(settings)
        windows.TURN_LATENCY_MS.window_secs = settings.headroom_window_secs
        self._cpu = cpu or CpuMeter()
        self._clock = clock
        self._settle_secs = settings.admission_settle_secs
        self._loads: deque[tuple[float, int]] = deque()
        self.learned = LearnedLimit(
            settings.max_calls, settings.admission_settle_secs, settings.headroom_window_secs
        )
        self.last: HeadroomReport | None = None

    def _growth(self, load: int) -> int:
        """How much the load grew over the settle window (calls let in whose cost is not known)."""
        now = self._clock()
        self._loads.append((now, load))
        while self._loads and self._loads[0][0] < now - self._settle_secs:
            self._loads.popleft()
        return max(0, load - min(n for _t, n in self._loads))

    def measure(self, load: int) -> Measurements:
        turns = windows.TURN_LATENCY_MS.values()
        return Measurements(
            load=load,
            p95_ms=windows.TURN_LATENCY_MS.percentile(95, min_samples=_MIN_TURNS),
            turns=len(turns),
            lag_ms=windows.LOOP_LAG_MS.percentile(95) or 0.0,
            cpu=self._cpu.read(),
            engine_queue=windows.ENGINE_IN_FLIGHT.count,
            recent_admissions=self._growth(load),
        )

    def assess(self, load: int) -> HeadroomReport:
        measured = self.measure(load)
        report = assess(measured, self.limits, time.time())
        self.learned.update(report, within_limits(measured, self.limits), self._clock())
        if report.open and load > 0 and load >= self.learned.allows():
            report = report.model_copy(
                update={"open": False, "admit_until": load, "reason": ClosedReason.LEARNED}
            )
        elif report.open:
            report = report.model_copy(
                update={"admit_until": min(report.admit_until, self.learned.allows())}
            )
        self.last = report
        return report
