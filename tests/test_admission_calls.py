"""Calls the pool cannot admit, end to end: the caller simulator against a real stack (Redis, an
orchestrator, one worker admitting by headroom with a hard ceiling of one call, the Twilio
emulator), hearing each agent's overflow answer: hold queue, transfer, busy."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from conftest import (
    OPERATOR,
    RedisServer,
    Server,
    ServerGroup,
    _start,
    free_port,
    scrape_metrics,
    stack_env,
    start_orchestrator,
    start_redis,
    start_worker,
    wait_for,
)
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, CallResult

ACCOUNT_SID = "AC" + "2" * 32
AUTH_TOKEN = "admission-test-token"
HOLD_NUMBER, TRANSFER_NUMBER, BUSY_NUMBER, BRIEF_HOLD_NUMBER = (
    "+15005550201", "+15005550202", "+15005550203", "+15005550204",
)
PEOPLE = "+15005550399"
DESK = "sip:desk@people.example.com"

_COMMON = """version: 1
greeting: Hello, you are through.
fallback: Sorry?
silence:
  reprompt_after_secs: 60
limits:
  max_duration_secs: 5
  closing: Goodbye.
"""
AGENTS = {
    "hold.yaml": f"""name: Hold agent
numbers: ["{HOLD_NUMBER}"]
overflow:
  action: queue
  line: Please hold.
  max_wait_secs: 60
""",
    "transfer.yaml": f"""name: Transfer agent
numbers: ["{TRANSFER_NUMBER}"]
overflow:
  action: transfer
  to: "{PEOPLE}"
""",
    "busy.yaml": f"""name: Busy agent
numbers: ["{BUSY_NUMBER}"]
overflow:
  action: busy
  line: The busy test line.
""",
    "brief.yaml": f"""name: Brief hold agent
numbers: ["{BRIEF_HOLD_NUMBER}"]
overflow:
  action: queue
  line: Please hold briefly.
  max_wait_secs: 1.5
  announce_position: false
  then:
    action: transfer
    to: "{DESK}"
""",
}


@dataclass
class Pool:
    redis: RedisServer
    twilio: Server
    orchestrator: Server
    worker: Server

    @property
    def url(self) -> str:
        return self.orchestrator.base_url

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", headers=OPERATOR, timeout=5).json()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    agents = tmp_path_factory.mktemp("overflow-agents")
    for name, text in AGENTS.items():
        (agents / name).write_text(_COMMON + text)
    with ServerGroup() as group:
        redis = group.add(start_redis(tmp_path_factory.mktemp("admission-redis")))
        port = free_port()
        twilio = group.add(_start(
            [sys.executable, "-m", "switchboard.emulators", "twilio", "--port", str(port),
             "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN],
            "emulator-twilio", "/health", port, None,
        ))  # fmt: skip
        env = {
            **stack_env(redis.url),
            "SWITCHBOARD_ADMISSION": "headroom",
            "SWITCHBOARD_AGENTS_DIR": str(agents),
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "SWITCHBOARD_TWILIO_API_URL": twilio.base_url,
        }
        orchestrator = group.add(start_orchestrator(redis.url, env))
        # The ceiling makes headroom controllable: one call in, the next one overflows.
        worker = group.add(start_worker(redis.url, "adm-w1", max_calls=1, env=env))
        pool = Pool(redis, twilio, orchestrator, worker)
        wait_for(lambda: pool.stats()["admission"]["admits_now"] == 1, 30, what="the worker's headroom report")
        yield pool


def script(number: str) -> CallScript:
    # Silent until the agent's time limit ends the call (greeting, 5 s, "Goodbye.").
    return CallScript(
        to_number=number, turns=[CallerTurn(reply_timeout_ms=20_000, hangup_expected=True)],
    )


async def call(pool: Pool, number: str) -> tuple[float, CallResult]:
    started = time.monotonic()
    result = await run_call(
        pool.url, script(number), auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, transcribe=False,
        twilio_api=pool.twilio.base_url, max_call_s=90,
    )
    return started, result


async def until(condition, what: str, limit_secs: float = 20.0) -> None:
    deadline = time.monotonic() + limit_secs
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


def hold_queue_length(pool: Pool) -> int:
    return pool.stats()["admission"]["hold_queue_length"]


def pool_full(pool: Pool) -> bool:
    stats = pool.stats()
    worker = stats["workers"][0]
    return worker["load"] == 1 and stats["admission"]["admits_now"] == 0 and not worker["headroom"]["open"]


async def test_held_callers_hear_hold_audio_and_their_place_and_are_connected_in_arrival_order(pool: Pool):
    before = scrape_metrics(pool.url, OPERATOR)
    first = asyncio.create_task(call(pool, HOLD_NUMBER))
    await until(lambda: pool_full(pool), "the first call holds the only slot")
    assert pool.stats()["workers"][0]["headroom"]["closed_reason"] == "ceiling"
    second = asyncio.create_task(call(pool, HOLD_NUMBER))
    await until(lambda: hold_queue_length(pool) == 1, "the second call is held")
    third = asyncio.create_task(call(pool, HOLD_NUMBER))
    await until(lambda: hold_queue_length(pool) == 2, "the third call is held")
    (_, a), (b_start, b), (c_start, c) = await asyncio.gather(first, second, third)

    assert a.hold is None and a.outcome is CallOutcome.AGENT_HUNG_UP, a.reason
    for result, position in ((b, 1), (c, 2)):
        assert result.outcome is CallOutcome.AGENT_HUNG_UP, (result.reason, result.turns, result.greeting)
        assert result.greeting is not None  # an agent answered once connected
        hold = result.hold
        assert hold is not None
        assert hold.lines[:2] == ["Please hold.", f"You are number {position} in line."]
        assert hold.positions[0] == position and hold.positions == sorted(hold.positions, reverse=True)
        assert hold.hold_audio_s > 0 and hold.hold_audio_url.endswith("/twilio/hold.wav")
        assert hold.connected and hold.moved_by_rest
    # First come, first served: the second caller was put through before the third.
    assert b_start + b.hold.left_at_s < c_start + c.hold.left_at_s
    after = scrape_metrics(pool.url, OPERATOR)
    grew = [
        after.value(name, **labels) - before.value(name, **labels)
        for name, labels in (
            ("admission_decisions_total", {"decision": "queued"}),
            ("admission_decisions_total", {"decision": "admitted"}),
            ("hold_outcomes_total", {"outcome": "connected"}),
            ("hold_wait_seconds_count", {}),
        )
    ]
    assert grew == [2, 3, 2, 2]


async def test_overflow_transfers_or_says_busy_and_a_hold_past_its_maximum_wait_gets_its_fallback(pool: Pool):
    occupying = asyncio.create_task(call(pool, HOLD_NUMBER))
    await until(lambda: pool_full(pool), "a call holds the only slot")
    (_, transferred), (_, busy), (_, brief) = await asyncio.gather(
        call(pool, TRANSFER_NUMBER), call(pool, BUSY_NUMBER), call(pool, BRIEF_HOLD_NUMBER)
    )
    await occupying

    assert transferred.outcome is CallOutcome.TRANSFERRED
    assert [t.target for t in transferred.transfers] == [PEOPLE]
    assert busy.outcome is CallOutcome.REJECTED and busy.reason == "twiml: The busy test line."
    assert brief.outcome is CallOutcome.TRANSFERRED and [t.target for t in brief.transfers] == [DESK]
    assert brief.hold is not None and not brief.hold.connected
    assert brief.hold.lines == ["Please hold briefly."] and brief.hold.positions == []
    assert brief.hold.left_at_s is not None and brief.hold.left_at_s >= 1.5
    metrics = scrape_metrics(pool.url, OPERATOR)
    assert metrics.value("admission_decisions_total", decision="overflowed") >= 1
    assert metrics.value("admission_decisions_total", decision="refused") >= 1
    assert metrics.value("hold_outcomes_total", outcome="timed_out") >= 1


def test_the_default_hold_audio_is_an_audible_wav(pool: Pool):
    response = httpx.get(f"{pool.url}/twilio/hold.wav", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert response.content[:4] == b"RIFF" and len(response.content) > 8000


