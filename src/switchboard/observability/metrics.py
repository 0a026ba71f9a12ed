"""Every Prometheus metric Switchboard exports, defined in one place.

Names follow the architecture document (``turn_rtt_ms``, ``active_calls``,
``connection_errors_total``, ``pipeline_errors_total``). Labels stay low-cardinality:
never a call id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS_MS = (
    100, 200, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700, 800, 900, 1000, 1250, 1500, 2000, 3000, 5000,
)
_STAGE_BUCKETS_MS = (5, 10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 2000, 5000)

TURN_RTT_MS = Histogram(
    "turn_rtt_ms",
    "Agent-side voice-to-voice latency per turn: caller's end of speech to first agent audio sent.",
    buckets=_LATENCY_BUCKETS_MS,
)
STAGE_LATENCY_MS = Histogram(
    "stage_latency_ms",
    "Latency of one pipeline stage, measured from the caller's end of speech.",
    ["stage", "engine"],
    buckets=_STAGE_BUCKETS_MS,
)
ACTIVE_CALLS = Gauge("active_calls", "Calls currently connected to this process.")
CALLS_TOTAL = Counter("calls_total", "Calls handled, by outcome.", ["outcome"])
CONNECTION_ERRORS = Counter(
    "connection_errors_total", "Media or signalling connections that failed.", ["transport"]
)
PIPELINE_ERRORS = Counter("pipeline_errors_total", "Errors raised inside call pipelines.", ["stage"])
ENGINE_ERRORS = Counter("engine_errors_total", "Errors from STT/TTS/LLM engines.", ["engine"])
TTS_CACHE = Counter("tts_cache_total", "TTS sentence cache lookups.", ["result"])
BAD_MESSAGES = Counter(
    "telephony_bad_messages_total", "Telephony messages that were malformed or unexpected.", ["provider"]
)
WEBHOOKS = Counter("webhooks_total", "Webhooks received, by provider and result.", ["provider", "result"])

# Dispatch: orchestrators, the Redis queue and the worker pool.
QUEUE_LENGTH = Gauge("queue_length", "Call jobs waiting in the Redis stream, not yet claimed.")
JOBS_DISPATCHED = Counter("jobs_dispatched_total", "Call jobs enqueued by orchestrators.", ["kind"])
JOBS_CLAIMED = Counter("jobs_claimed_total", "Call jobs claimed by workers.", ["kind"])
JOBS_REDELIVERED = Counter(
    "jobs_redelivered_total", "Call jobs reclaimed from a worker that stopped acknowledging."
)
CALLS_REJECTED = Counter("calls_rejected_total", "Calls answered busy, by reason.", ["reason"])
DISPATCH_LATENCY_MS = Histogram(
    "dispatch_latency_ms",
    "Webhook received to job claimed by a worker.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000),
)
WORKER_CAPACITY = Gauge("worker_capacity", "Calls this worker may run at once.")
WORKER_LOAD = Gauge("worker_load", "Calls running or reserved on this worker.")
WORKERS_LIVE = Gauge("workers_live", "Workers with a fresh heartbeat, as the orchestrator sees them.")
WORKER_FAILURES = Counter("worker_failures_total", "Worker processes that exited unexpectedly.")
EVENT_LOOP_LAG_SECONDS = Histogram(
    "event_loop_lag_seconds",
    "How late the event loop woke a timer: blocking work on the loop shows up here.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
