"""Every Prometheus metric Switchboard exports, defined in one place.

Names follow the architecture document (``turn_rtt_ms``, ``active_calls``,
``connection_errors_total``, ``pipeline_errors_total``). Labels stay low-cardinality:
never a call id, a phone number or a worker id (Prometheus adds ``instance`` itself).
Each process exposes its own registry on ``/metrics``; dashboards and alerts in
``deploy/`` sum across instances, and ``tests/test_dashboard.py`` checks that every name
they use is defined here.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# 50 ms steps from 250 to 800 ms, where the 600 ms p95 target sits: histogram_quantile
# interpolates inside one bucket, so its error there is at most 50 ms. 600 is a boundary,
# so "p95 > 600" is exact in bucket counts whatever the interpolation.
# fmt: off
_LATENCY_BUCKETS_MS = (
    100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700, 750, 800, 900, 1000,
    1250, 1500, 2000, 3000, 5000,
)
# fmt: on
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
CALLS_TOTAL = Counter(
    "calls_total",
    "Calls a worker ran to the end, by outcome (completed | failed); refusals are calls_rejected_total.",
    ["outcome"],
)
WEBRTC_OFFERS_ABANDONED = Counter(
    "webrtc_offers_abandoned_total",
    "Browser calls answered whose peer never connected (dead offers): counted here, not stored as calls.",
)
CONNECTION_ERRORS = Counter(
    "connection_errors_total", "Media or signalling connections that failed.", ["transport"]
)
PIPELINE_ERRORS = Counter(
    "pipeline_errors_total", "Errors raised inside call pipelines.", ["stage"]
)
STT_SPECULATIONS = Counter(
    "stt_speculations_total",
    "Transcriptions started in the caller's silence before the VAD stop, by what became of them.",
    ["result"],  # used, dropped (the caller went on)
)
ENGINE_ERRORS = Counter("engine_errors_total", "Errors from STT/TTS/LLM engines.", ["engine"])
PROVIDER_FALLBACKS = Counter(
    "provider_fallbacks_total",
    "Requests a provider (engine) failed or timed out on and that went to the next one configured.",
    ["provider"],
)
CALLS_ENDED_BY_AGENT = Counter(
    "calls_ended_by_agent_total",
    "Calls the agent hung up itself, by reason (agent | idle | max_duration).",
    ["reason"],
)
TRANSFERS = Counter(
    "call_transfers_total",
    "Transfers asked of the carrier and how they ended (initiated | answered | busy | no_answer | "
    "failed | invalid_target | unsupported).",
    ["outcome"],
)
DTMF_DIGITS = Counter(
    "dtmf_digits_total",
    "Keypad presses, by what they did (menu | invalid | collected | ignored); malformed dtmf "
    "messages are bad_messages_total.",
    ["result"],
)
DTMF_SENT = Counter(
    "dtmf_sent_total",
    "Digit strings the agent played to the far end (a remote IVR), by who asked (intent | llm).",
    ["source"],
)
AGENT_CONFIG_ERRORS = Counter(
    "agent_config_errors_total",
    "Agent config files refused at load or reload (the previous version keeps serving).",
)
LLM_TOOL_CALLS = Counter(
    "llm_tool_calls_total", "Tool calls made by LLM responders, by tool and result.", ["tool", "result"]
)
OUTBOUND_CALLS = Counter(
    "outbound_calls_total",
    "Outbound calls: placed | refused | error when asking Twilio; human | machine | voicemail when answered.",
    ["result"],
)
AGENT_TOOL_CALLS = Counter(
    "agent_tool_calls_total",
    "Agent tool webhooks called, by tool and result (ok | timeout | unreachable | http_error | bad_response).",
    ["tool", "result"],
)
CALL_DURATION_SECONDS = Histogram(
    "call_duration_seconds",
    "Connected time of finished calls, by outcome.",
    ["outcome"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600),
)
MEDIA_STAGE_DROPPED_CHUNKS = Counter(
    "media_stage_dropped_chunks_total",
    "Caller audio chunks a call's media stage dropped: its STT fell more than the stage's backlog "
    "(10-20 s of audio) behind.",
)
TTS_CACHE = Counter("tts_cache_total", "TTS sentence cache lookups.", ["result"])
BAD_MESSAGES = Counter(
    "telephony_bad_messages_total",
    "Telephony messages of an unknown kind, ignored (malformed ones close the socket: media_rejected_total).",
    ["provider"],
)
MEDIA_REJECTED = Counter(
    "media_rejected_total",
    "Media sockets closed for breaking a limit or the protocol, by reason (oversized | binary | bad_json | "
    "bad_utf8 | bad_message | out_of_order | rate | start_timeout), and peers that left before start (left_before_start).",
    ["transport", "reason"],
)
RATE_LIMITED = Counter(
    "rate_limited_total", "HTTP requests refused with 429, by endpoint group.", ["group"]
)
REQUESTS_TOO_LARGE = Counter("requests_too_large_total", "HTTP requests refused with 413 (body over the cap).")
WEBHOOKS = Counter(
    "webhooks_total", "Webhooks received, by provider and result.", ["provider", "result"]
)

# Dispatch: orchestrators, the Redis queue and the worker pool.
QUEUE_LENGTH = Gauge("queue_length", "Call jobs waiting in the Redis stream, not yet claimed.")
JOBS_DISPATCHED = Counter("jobs_dispatched_total", "Call jobs enqueued by orchestrators.", ["kind"])
JOBS_CLAIMED = Counter("jobs_claimed_total", "Call jobs claimed by workers.", ["kind"])
JOBS_REDELIVERED = Counter(
    "jobs_redelivered_total", "Call jobs reclaimed from a worker that stopped acknowledging."
)
CALLS_REJECTED = Counter(
    "calls_rejected_total",
    "Calls answered busy or refused, by reason (no_capacity | worker_lost | worker_full | browser_cap | "
    "redis_unavailable).",
    ["reason"],
)
DISPATCH_LATENCY_MS = Histogram(
    "dispatch_latency_ms",
    "Webhook received to job claimed by a worker.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000),
)
WORKER_CAPACITY = Gauge("worker_capacity", "Calls this worker may run at once.")
WORKER_LOAD = Gauge("worker_load", "Calls running or reserved on this worker.")
WORKERS_LIVE = Gauge(
    "workers_live", "Workers with a fresh heartbeat, as the orchestrator sees them."
)
WORKER_FAILURES = Counter("worker_failures_total", "Worker processes that exited unexpectedly.")
EVENT_LOOP_LAG_SECONDS = Histogram(
    "event_loop_lag_seconds",
    "How late the event loop woke a timer: blocking work on the loop shows up here.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
EVENT_LOOP_TASKS = Gauge(
    "event_loop_tasks",
    "Unfinished asyncio tasks on this process's event loop: a count that grows with calls served is a leak.",
)

# Call records: the history database, recordings and post-call webhooks.
CALL_RECORDS_SAVED = Counter(
    "call_records_saved_total",
    "Finished calls written to the call history, by result (saved | merged: a resumed call's "
    "later stream added to its record | amended: a saved call's late news, such as a cold "
    "transfer's result | refused: another stream of a stored call | failed).",
    ["result"],
)
CALL_RECORDINGS = Counter(
    "call_recordings_total", "Call recordings stored, by result (saved | failed).", ["result"]
)
CALL_WEBHOOKS = Counter(
    "call_webhooks_total",
    "Post-call webhook attempts, by result (delivered | failed | dead_lettered).",
    ["result"],
)
CALL_ANALYSES = Counter(
    "call_analyses_total",
    "Post-call LLM summaries, by result (done | failed | skipped: no LLM configured).",
    ["result"],
)
CALL_RECORDS_PURGED = Counter(
    "call_records_purged_total", "Calls deleted (rows and audio) by retention or on request.", ["reason"]
)

# Media edge: Twilio streams relayed by the orchestrators to the worker holding the call.
MEDIA_EDGE_STREAMS = Counter(
    "media_edge_streams_total",
    "Media streams at the edge, by result (relayed | bad_signature | bad_token | token_reused | "
    "no_start | worker_gone | worker_unreachable | worker_refused | store_unavailable).",
    ["result"],
)
STREAM_TOKENS_REFUSED = Counter(
    "stream_tokens_refused_total",
    "Media stream tokens refused, by hop (edge | worker) and reason (malformed | bad_signature | "
    "expired | other_worker | other_call | reused: a second stream on a single-use token).",
    ["hop", "reason"],
)
MEDIA_EDGE_ACTIVE = Gauge("media_edge_active_streams", "Media streams this edge is relaying now.")
MEDIA_EDGE_CLOSES = Counter(
    "media_edge_closes_total",
    "Relayed streams ended, by the side that closed first (caller | worker) and the code passed on.",
    ["side", "code"],
)
MEDIA_EDGE_CONNECT_MS = Histogram(
    "media_edge_connect_ms",
    "Time for the edge to open a stream's hop to its worker (TCP + WebSocket handshake).",
    buckets=(0.5, 1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2000),
)
CALLS_RESUMED = Counter(
    "calls_resumed_total",
    "Twilio coming back after a call's stream closed (<Redirect>), by what the orchestrator did: "
    "placed (on another worker, with its conversation) | ended (the call was over: hung up) | "
    "no_capacity | gave_up (resumed too often).",
    ["result"],
)

# Admission by measured headroom (switchboard.dispatch.admission, switchboard.worker.headroom).
ADMISSION_DECISIONS = Counter(
    "admission_decisions_total",
    "What admission decided for each new call: admitted | queued (hold queue) | overflowed "
    "(transferred to people) | refused (busy line).",
    ["decision"],
)
HOLD_OUTCOMES = Counter(
    "hold_outcomes_total",
    "How waits in the hold queue ended: connected (to an agent) | timed_out (the fallback action) | "
    "abandoned (the caller hung up).",
    ["outcome"],
)
HOLD_WAIT_SECONDS = Histogram(
    "hold_wait_seconds",
    "How long a held call waited, from joining the queue to being connected, timed out or abandoned.",
    buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600),
)
HOLD_QUEUE_LENGTH = Gauge(
    "hold_queue_length", "Calls waiting in the hold queue (the same value on every orchestrator: use max)."
)
HOLD_QUEUE_OLDEST_SECONDS = Gauge(
    "hold_queue_oldest_wait_seconds",
    "How long the longest-waiting held call has waited (every orchestrator: use max); 0 when none waits.",
)
WORKER_HEADROOM_OPEN = Gauge("worker_headroom_open", "1 while this worker admits calls, else 0.")
WORKER_ADMIT_UNTIL = Gauge(
    "worker_admit_until", "The load this worker admits calls up to until its next headroom report."
)
WORKER_ADMISSION_CLOSED = Gauge(
    "worker_admission_closed",
    "1 for the reason this worker is closed (latency | lag | cpu | engine_queue | learned | ceiling), else 0.",
    ["reason"],
)
WORKER_TURN_P95_MS = Gauge(
    "worker_turn_p95_ms", "Agent-side turn latency p95 over the headroom window (0: too few turns)."
)
PII_REDACTED = Counter(
    "pii_redacted_total",
    "PII spans taken out of stored calls' text (transcripts, digits, tool calls), by entity type.",
    ["entity"],
)
PII_AUDIO_SPANS = Counter(
    "pii_audio_spans_total", "Spans of recordings masked for PII or keypad tones."
)
PII_REDACTION_FAILURES = Counter(
    "pii_redaction_failures_total",
    "Calls whose redaction failed: stored with transcript, digits and recording withheld.",
)
