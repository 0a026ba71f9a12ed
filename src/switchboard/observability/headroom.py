"""What this process measures about its own load, for admission: recent turn latency, event-loop
lag and local engine work in flight.

Like the Prometheus metrics beside it these are per process (one worker process, one set of
windows). Prometheus histograms cannot answer "p95 over the last 10 s" in-process, so the
samples are also kept here, timestamped, for :mod:`switchboard.worker.headroom` to read.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

# Enough for a few hundred calls' turns in a short window; older samples fall off anyway.
_MAX_SAMPLES = 4096


class RollingWindow:
    """Timestamped samples of the last ``window_secs``; percentiles over what is left."""

    def __init__(self, window_secs: float, clock: Callable[[], float] = time.monotonic):
        self.window_secs = window_secs
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=_MAX_SAMPLES)

    def add(self, value: float) -> None:
        self._samples.append((self._clock(), value))

    def values(self) -> list[float]:
        cutoff = self._clock() - self.window_secs
        while self._samples and self._samples[0][0] < cutoff:
            self._samples.popleft()
        return [v for _t, v in self._samples]

    def percentile(self, q: float, *, min_samples: int = 1) -> float | None:
        """The ``q``-th percentile of the window; None with fewer than ``min_samples``."""
        values = self.values()
        if len(values) < min_samples:
            return None
        return float(np.percentile(np.asarray(values, dtype=float), q))

    def clear(self) -> None:
        self._samples.clear()


class InFlight:
    """How many requests wait for or run on the local engines (Whisper, Piper) right now."""

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def one(self):
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


# The agent-side voice-to-voice latency of each turn (ms), as turn_rtt_ms observes it.
TURN_LATENCY_MS = RollingWindow(10.0)
# How late the event loop woke a timer (ms), as event_loop_lag_seconds observes it.
LOOP_LAG_MS = RollingWindow(5.0)
ENGINE_IN_FLIGHT = InFlight()
