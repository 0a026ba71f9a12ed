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
