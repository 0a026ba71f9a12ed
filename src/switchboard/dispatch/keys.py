"""Every Redis key Switchboard uses, each named by one function.

| key | type | what |
|---|---|---|
| ``sb:jobs`` | stream | call jobs; consumer group ``workers`` |
| ``sb:workers`` | set | ids of registered workers |
| ``sb:worker:{id}`` | hash, TTL | one worker's registration and heartbeat (expires when it dies) |
| ``sb:worker:{id}:load`` | string | calls running or reserved on that worker |
| ``sb:worker:{id}:reservations`` | zset | call id → deadline of slots reserved for Twilio streams |
| ``sb:worker:{id}:browser`` | zset | call id → deadline of browser calls placed there (``+inf`` once connected) |
| ``sb:worker:{id}:headroom`` | hash, TTL | the worker's last headroom report: open, admit_until, reason, measurements |
| ``sb:hold`` | zset | call id → arrival (epoch s) of calls waiting in the hold queue, first come first served |
| ``sb:hold:deadlines`` | zset | call id → epoch s at which a held call stops waiting and gets its fallback |
| ``sb:hold:{id}`` | hash, TTL | one held call: agent, arrival, where it was placed, the TwiML that connects it |
| ``sb:call:{id}`` | hash, TTL | one call's state: job, owner, status, times |
| ``sb:call:{id}:session`` | hash, TTL | the conversation so far, so another worker can carry the call on |
| ``sb:stream-token:{id}:{hop}`` | string, TTL | a stream token redeemed on a hop (edge, worker): single use |
| ``sb:room:{name}`` | string, TTL | the call id dispatched for a LiveKit room (one agent per room) |
| ``sb:event:{id}`` | string, TTL | LiveKit webhook event ids already seen (replay protection) |
| ``sb:latency`` | list | recent dispatch latencies (ms), for ``/stats`` |
| ``sb:turn_latency`` | list | recent agent-side voice-to-voice latencies (ms), for ``/stats`` |
| ``sb:ratelimit/...`` | list, TTL | moving-window request log of one (endpoint group, source), kept by ``limits`` |
"""

PREFIX = "sb"
JOB_GROUP = "workers"
# The ``limits`` package names its own keys (``{prefix}/LIMITER/{group}/{source}/...``).
RATE_LIMIT_PREFIX = f"{PREFIX}:ratelimit"


def jobs() -> str:
    return f"{PREFIX}:jobs"


def workers() -> str:
    return f"{PREFIX}:workers"


def worker(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


def worker_load(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}:load"


def worker_reservations(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}:reservations"


def worker_browser_calls(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}:browser"


def worker_headroom(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}:headroom"


def hold_line() -> str:
    return f"{PREFIX}:hold"


def hold_deadlines() -> str:
    return f"{PREFIX}:hold:deadlines"


def held_call(call_id: str) -> str:
    return f"{PREFIX}:hold:{call_id}"


def call(call_id: str) -> str:
    return f"{PREFIX}:call:{call_id}"


def session(call_id: str) -> str:
    return f"{PREFIX}:call:{call_id}:session"


def stream_token(token_id: str, hop: str) -> str:
    return f"{PREFIX}:stream-token:{token_id}:{hop}"


def room(name: str) -> str:
    return f"{PREFIX}:room:{name}"


def webhook_event(event_id: str) -> str:
    return f"{PREFIX}:event:{event_id}"


def dispatch_latency() -> str:
    return f"{PREFIX}:latency"


def turn_latency() -> str:
    return f"{PREFIX}:turn_latency"
