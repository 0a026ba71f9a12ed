"""Media-stream fuzzer: bad Twilio sockets against a pooled worker that is serving a real call.

Every bad socket must be closed by the worker with the close code its fault deserves, and
counted under that reason in ``media_rejected_total``; the worker must not log a traceback,
and the real call beside them must still hear every reply. The fuzz is seeded and bounded
(at most ``FUZZ_MAX_SOCKETS`` sockets, ``FUZZ_LANES`` at a time, for one call).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import shutil
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from conftest import (
    REPLIES,
    Clip,
    Server,
    agent_lines,
    metric,
    scrape_metrics,
    start_orchestrator,
    start_redis,
    start_worker,
    stored_call,
    wait_for,
)
from switchboard.call_ids import call_id_for_twilio
from switchboard.dispatch import stream_tokens
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, CallResult, format_summary

WORKER_ID = "fuzz-w1"
DEV_STREAM_SECRET = "switchboard-dev-stream-secret"  # the Settings default, used by the test pool
START_TIMEOUT_SECS = 2.0
# A smaller burst than production's so each flood socket costs the shared cores less.
BURST = 200
FLOOD_MESSAGES = 2000
FUZZ_MAX_SOCKETS = 400
FUZZ_LANES = 2
FUZZ_PAUSE_SECS = 0.2
SEED = 14
CLOSE_LIMIT_SECS = 10.0
ULAW_SILENCE = base64.b64encode(b"\xff" * 160).decode()


@dataclass
class Pool:
    orchestrator: Server
    worker: Server

    def media_url(self, call_sid: str) -> str:
        token = stream_tokens.issue(DEV_STREAM_SECRET, call_id_for_twilio(call_sid), WORKER_ID, 30)
        return self.worker.base_url.replace("http://", "ws://") + f"/twilio/media/{token}"

    def rejected(self) -> Counter[str]:
        """``media_rejected_total`` of the worker, by reason."""
        counts: Counter[str] = Counter()
        for labels, value in scrape_metrics(self.worker.base_url).samples("media_rejected_total"):
            counts[labels["reason"]] += int(value)
        return counts

    def loop_lag(self) -> tuple[int, int, int]:
        """Event-loop lag samples of the worker: all, over 25 ms, over 1 s."""
        samples = scrape_metrics(self.worker.base_url).samples("event_loop_lag_seconds_bucket")
        buckets = {labels["le"]: int(value) for labels, value in samples}
        total = buckets["+Inf"]
        return total, total - buckets["0.025"], total - buckets["1.0"]

    def ignored(self) -> int:
        return int(metric(self.worker.base_url, "telephony_bad_messages_total", provider="twilio"))


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    data_dir = Path(tempfile.mkdtemp(prefix="sb-fuzz-redis-"))
    redis = start_redis(data_dir)
    env = {
        "SWITCHBOARD_LOG_LEVEL": "INFO",
        "SWITCHBOARD_MEDIA_START_TIMEOUT_SECS": str(START_TIMEOUT_SECS),
        "SWITCHBOARD_MEDIA_MESSAGE_BURST": str(BURST),
    }
    servers: list[Server] = []
    try:
        servers.append(start_orchestrator(redis.url, env))
        servers.append(start_worker(redis.url, WORKER_ID, max_calls=8, env=env))
        wait_for(
            lambda: httpx.get(f"{servers[0].base_url}/health", timeout=2).status_code == 200,
            limit_secs=30,
            what="orchestrator sees the worker",
        )
        yield Pool(*servers)
    finally:
        for server in reversed(servers):
            server.stop()
        redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


# --- Twilio messages ------------------------------------------------------------------------


def connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def call_sid_of(sid: str) -> str:
    """The case's call: the stream token a case's socket presents is for it."""
    return "CA" + sid[2:]


def start(sid: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": sid,
            "start": {
                "accountSid": "AC0",
                "streamSid": sid,
                "callSid": call_sid_of(sid),
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def media(sid: str, n: int, payload: object = ULAW_SILENCE) -> str:
    body = {"track": "inbound", "chunk": str(n), "timestamp": str(20 * n), "payload": payload}
    return json.dumps(
        {"event": "media", "sequenceNumber": str(n + 2), "streamSid": sid, "media": body}
    )


def stop(sid: str) -> str:
    return json.dumps(
        {"event": "stop", "sequenceNumber": "99", "streamSid": sid, "stop": {"callSid": "CA0"}}
    )


# --- fuzz cases -----------------------------------------------------------------------------

Message = str | bytes | tuple[str, bytes]  # ("text", raw) sends raw bytes in a text frame


@dataclass(frozen=True)
class Case:
    """What a bad socket sends, and how the worker must answer it."""

    name: str
    messages: list[Message]
    code: int | None  # the close code the worker sends; None: the worker leaves it open
    reason: str | None  # the media_rejected_total reason counted
    sid: str = ""  # the stream's sid (its call's sid follows from it)


def _in_call(sid: str, rng: random.Random) -> list[Message]:
    return [connected(), start(sid), *(media(sid, i) for i in range(rng.randint(0, 5)))]


def _junk_text(rng: random.Random) -> str:
    return "~" + "".join(rng.choice('{}[]":,abc019 \\') for _ in range(rng.randint(1, 300)))


def _wrong_type_before_start(sid: str, rng: random.Random) -> str:
    return rng.choice(
        [
            "[1, 2, 3]",
            '"start"',
            "42",
            "null",
            json.dumps({"event": 5}),
            json.dumps({"no_event": True}),
            json.dumps({"event": "start", "start": "not an object"}),
            json.dumps({"event": "start", "start": {}}),
            json.dumps({"event": "start", "streamSid": 7, "start": {}}),
            json.dumps({"event": "start", "streamSid": sid, "start": {"customParameters": [1]}}),
        ]
    )


def _wrong_type_in_call(sid: str, rng: random.Random) -> str:
    return rng.choice(
        [
            media(sid, 9, payload=5),
            media(sid, 9, payload="!!!not base64!!!"),
            json.dumps({"event": "media", "streamSid": sid, "media": "not an object"}),
            json.dumps({"event": "media", "streamSid": sid}),
            json.dumps({"event": "mark", "streamSid": sid, "mark": "no name"}),
            # (A key press without a valid digit is dropped, not closed: tests/test_call_control.py.)
            json.dumps([{"event": "media"}]),
        ]
    )


CASES: dict[str, Callable[[str, random.Random], Case]] = {
    "oversized_before_start": lambda sid, rng: Case(
        "oversized_before_start",
        [connected(), "x" * rng.choice([20_000, 5_000_000])],
        1009,
        "oversized",
    ),
    "oversized_in_call": lambda sid, rng: Case(
        "oversized_in_call",
        [*_in_call(sid, rng), media(sid, 7, payload="A" * 40_000)],
        1009,
        "oversized",
    ),
    "binary_before_start": lambda sid, rng: Case(
        "binary_before_start", [connected(), rng.randbytes(rng.randint(1, 400))], 1003, "binary"
    ),
    "binary_in_call": lambda sid, rng: Case(
        "binary_in_call", [*_in_call(sid, rng), rng.randbytes(160)], 1003, "binary"
    ),
    "junk_text": lambda sid, rng: Case("junk_text", [_junk_text(rng)], 1007, "bad_json"),
    "truncated_start": lambda sid, rng: Case(
        "truncated_start",
        [connected(), (s := start(sid))[: rng.randint(1, len(s) - 1)]],
        1007,
        "bad_json",
    ),
    "truncated_media": lambda sid, rng: Case(
        "truncated_media",
        [*_in_call(sid, rng), (m := media(sid, 8))[: rng.randint(1, len(m) - 1)]],
        1007,
        "bad_json",
    ),
    "deep_nesting": lambda sid, rng: Case(
        "deep_nesting", [connected(), "[" * 4000 + "]" * 4000], 1007, "bad_json"
    ),
    "invalid_utf8_text": lambda sid, rng: Case(
        "invalid_utf8_text", [connected(), ("text", b'{"event": "\xff\xfe"}')], 1007, "bad_utf8"
    ),
    "wrong_type_before_start": lambda sid, rng: Case(
        "wrong_type_before_start",
        [connected(), _wrong_type_before_start(sid, rng)],
        1008,
        "bad_message",
    ),
    "wrong_type_in_call": lambda sid, rng: Case(
        "wrong_type_in_call",
        [*_in_call(sid, rng), _wrong_type_in_call(sid, rng)],
        1008,
        "bad_message",
    ),
    "media_before_start": lambda sid, rng: Case(
        "media_before_start", [connected(), media(sid, 1)], 1008, "out_of_order"
    ),
    "start_twice": lambda sid, rng: Case(
        "start_twice", [*_in_call(sid, rng), start(sid)], 1008, "out_of_order"
    ),
    "media_after_stop": lambda sid, rng: Case(
        "media_after_stop", [*_in_call(sid, rng), stop(sid), media(sid, 50)], 1008, "out_of_order"
    ),
    "flood": lambda sid, rng: Case(
        "flood",
        [connected(), start(sid), *(media(sid, i) for i in range(FLOOD_MESSAGES))],
        1008,
        "rate",
    ),
    "no_start": lambda sid, rng: Case("no_start", [connected()], 1008, "start_timeout"),
    "left_before_start": lambda sid, rng: Case("left_before_start", [], None, "left_before_start"),
    "unknown_event": lambda sid, rng: Case(
        "unknown_event",
        [*_in_call(sid, rng), json.dumps({"event": "surprise", "streamSid": sid}), media(sid, 6)],
        None,
        None,
    ),
}


def fuzz_cases(seed: int) -> Iterator[Case]:
    """Every kind once in a random order, then kinds at random, without end."""
    rng = random.Random(seed)
    kinds = list(CASES)
    rng.shuffle(kinds)
    for i in itertools.count():
        kind = kinds[i] if i < len(kinds) else rng.choice(kinds)
        sid = f"MZfuzz{i:04d}"
        yield replace(CASES[kind](sid, rng), sid=sid)


@dataclass
class Outcome:
    case: Case
    code: int | None  # the close code received: the worker's, or its echo of our 1000; None: none
    closed_by_us: bool


async def send(ws: websockets.ClientConnection, message: Message) -> None:
    if isinstance(message, tuple):
        await ws.send(message[1], text=True)
    else:
        await ws.send(message)


async def play(url: str, case: Case) -> Outcome:
    """Send the case's messages, then wait for the worker to close (or close ourselves)."""
    async with websockets.connect(url, max_size=None, open_timeout=10) as ws:
        try:
            for message in case.messages:
                await send(ws, message)
            if case.code is None:
                await ws.close()
                return Outcome(case, ws.close_code, closed_by_us=True)
            async with asyncio.timeout(CLOSE_LIMIT_SECS):
                while True:
                    await ws.recv()
        except ConnectionClosed as closed:
            return Outcome(case, closed.rcvd.code if closed.rcvd else None, closed_by_us=False)
        except TimeoutError:
            return Outcome(case, None, closed_by_us=False)
    return Outcome(case, ws.close_code, closed_by_us=True)


async def fuzz_until(pool: Pool, done: asyncio.Future) -> list[Outcome]:
    """Bad sockets, ``FUZZ_LANES`` at a time, until ``done`` (or ``FUZZ_MAX_SOCKETS``)."""
    cases = fuzz_cases(SEED)
    outcomes: list[Outcome] = []

    async def lane() -> None:
        while not done.done() and len(outcomes) < FUZZ_MAX_SOCKETS:
            case = next(cases)
            outcomes.append(await play(pool.media_url(call_sid_of(case.sid)), case))
            await asyncio.sleep(FUZZ_PAUSE_SECS)  # pacing the fuzz over the call, not a wait

    await asyncio.gather(*(lane() for _ in range(FUZZ_LANES)))
    return outcomes


def real_call_script(speech_clips: dict[str, Clip]) -> CallScript:
    return CallScript(
        turns=[
            CallerTurn(
                audio=speech_clips["osr_us_0010_s01_8k.wav"].path
            ),  # "...birch canoe..." -> boats
            CallerTurn(
                audio=speech_clips["osr_us_0010_s05_8k.wav"].path
            ),  # "Rice is often served..." -> food
        ]
    )


async def assert_replied(result: CallResult) -> list[float]:
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert all(turn.voice_to_voice_ms is not None for turn in result.turns), summary
    said = agent_lines(await stored_call(result.call_sid))
    assert said[1:] == [REPLIES["boats"], REPLIES["food"]], said
    return [t.voice_to_voice_ms for t in result.turns if t.voice_to_voice_ms is not None]


async def test_fuzzed_sockets_are_closed_and_counted_while_a_real_call_is_answered(
    pool: Pool, speech_clips: dict[str, Clip], capsys: pytest.CaptureFixture[str]
) -> None:
    script = real_call_script(speech_clips)
    baseline = await assert_replied(await run_call(pool.orchestrator.base_url, script, transcribe=False))

    before, ignored_before, lag_before = pool.rejected(), pool.ignored(), pool.loop_lag()
    call_task = asyncio.create_task(run_call(pool.orchestrator.base_url, script, transcribe=False))
    outcomes = await fuzz_until(pool, call_task)
    fuzzed = await assert_replied(await call_task)
    lag = [after - before for after, before in zip(pool.loop_lag(), lag_before, strict=True)]
    assert {o.case.name for o in outcomes} == set(CASES), (
        "the call ended before every kind was fuzzed"
    )

    wrong = [
        (o.case.name, o.case.code, o.code) for o in outcomes if o.code != (o.case.code or 1000)
    ]
    assert not wrong, f"sockets closed with the wrong code (case, expected, got): {wrong}"
    expected = Counter(o.case.reason for o in outcomes if o.case.reason)

    def counted() -> Counter[str] | None:
        delta = pool.rejected() - before
        return delta if delta == expected else None

    try:
        await asyncio.to_thread(wait_for, counted, 10, 0.2, "metric counts")
    except TimeoutError:
        assert pool.rejected() - before == expected
    assert pool.ignored() - ignored_before == sum(o.case.name == "unknown_event" for o in outcomes)

    health = await asyncio.to_thread(httpx.get, f"{pool.worker.base_url}/health", timeout=5)
    assert health.status_code == 200 and health.json()["active_calls"] == 0, health.text
    log = pool.worker.log()
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log[-6000:]
    assert "/twilio/media/eyJ" not in log, "a stream token reached the log"
    # A 5 MB message once froze the loop for 18 s; now it is refused unread. Generous bound:
    # two shared cores can delay a timer, but not by a second.
    assert lag[2] == 0, f"event loop stalled over 1 s {lag[2]} times during the fuzz"

    with capsys.disabled():
        print(
            f"\nreal call voice-to-voice ms: alone {[round(x) for x in baseline]} "
            f"(mean {statistics.mean(baseline):.0f}), beside {len(outcomes)} fuzz sockets "
            f"{[round(x) for x in fuzzed]} (mean {statistics.mean(fuzzed):.0f}); "
            f"kinds {dict(Counter(o.case.name for o in outcomes))}; "
            f"loop-lag samples {lag[0]}, over 25 ms {lag[1]}, over 1 s {lag[2]}"
        )
    # Generous: the fuzz shares two cores with the call's models; it must not stall the call.
    assert max(fuzzed) < max(baseline) + 1500, (baseline, fuzzed)
