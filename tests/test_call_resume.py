"""A call survives its worker: killed (kill -9) or drained out of time mid-call, the caller is
carried on by another worker with the conversation so far (issue 14, part 3).

Real processes: Redis, an orchestrator (public edge), a worker the calls move to and, per test, a
victim worker; the caller simulator plays Twilio, including the ``<Redirect>`` after every stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import dataclass

import httpx
import pytest
import redis

from conftest import (
    OPERATOR,
    REPLIES,
    Clip,
    RedisServer,
    Server,
    start_orchestrator,
    start_redis,
    start_worker,
    wait_for,
)
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, CallResult, format_summary

MAX_SILENCE_S = 3.0  # the goal for a worker killed mid-call


def _session(client: redis.Redis) -> dict | None:
    """The one call session in Redis, decoded (None until the call has one)."""
    keys = list(client.scan_iter(match="sb:call:*:session"))
    if len(keys) != 1:
        return None
    fields = client.hgetall(keys[0])
    if b"state" not in fields:
        return None
    return {
        "worker": fields.get(b"worker", b"").decode(),
        "ended": fields.get(b"ended", b"").decode(),
        "resumes": int(fields.get(b"resumes", b"0")),
        **json.loads(fields[b"state"]),
    }


def _agent_said(session: dict | None, words: str) -> bool:
    return bool(session) and any(
        m.get("role") == "assistant" and words in str(m.get("content")) for m in session["history"]
    )


def _record_on(worker: Server, call_sid: str) -> dict:
    response = httpx.get(f"{worker.base_url}/calls/{call_sid}", headers=OPERATOR, timeout=5)
    response.raise_for_status()
    return response.json()


def _two_turns(clips: dict[str, Clip]) -> CallScript:
    return CallScript(
        turns=[
            CallerTurn(audio=clips["osr_us_0010_s01_8k.wav"].path),  # boats
            CallerTurn(audio=clips["osr_us_0010_s04_8k.wav"].path, pause_before_ms=1500),  # food
        ]
    )


def _assert_carried_on(result: CallResult, before: dict, after: dict, survivor: Server) -> None:
    summary = format_summary(result) + f"\nresumes: {result.resumes}"
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert len(result.resumes) == 1, summary
    assert all(t.voice_to_voice_ms is not None for t in result.turns), summary
    # The conversation went on where it was: the first turn, answered by the lost worker, is in
    # the context the survivor carried on with, and the survivor answered the turn after.
    assert after["worker"] == KEEPER, after
    users = [[m for m in s["history"] if m.get("role") == "user"] for s in (before, after)]
    assert users[1][0] == users[0][0], (before["history"], after["history"])
    assert _agent_said(after, REPLIES["food"]), after["history"]
    record = _record_on(survivor, result.call_sid)
    assert any(e["event"] == "resumed" for e in record["events"]), record["events"]
    assert "food" in record["intents"], record


KEEPER = "keeper"  # the worker calls move to; one slot, so a victim with more free slots gets each call
ENV = {"SWITCHBOARD_API_KEY": OPERATOR["X-API-Key"], "SWITCHBOARD_DRAIN_TIMEOUT_SECS": "1"}


@dataclass
class Pool:
    redis: RedisServer
    client: redis.Redis
    orchestrator: Server
    keeper: Server

    def live_workers(self) -> int:
        return httpx.get(f"{self.orchestrator.base_url}/health", timeout=5).json().get("live_workers", 0)


@pytest.fixture(scope="module")
def module_pool(tmp_path_factory: pytest.TempPathFactory):
    server = start_redis(tmp_path_factory.mktemp("resume-redis"))
    orchestrator = start_orchestrator(server.url, ENV)
    keeper = start_worker(server.url, KEEPER, max_calls=1, env=ENV)
    pool = Pool(server, redis.Redis.from_url(server.url), orchestrator, keeper)
    wait_for(lambda: pool.live_workers() == 1, what="the keeper registered")
    try:
        yield pool
    finally:
        for process in (keeper, orchestrator):
            process.stop()
        pool.client.close()
        server.stop()


@pytest.fixture
def pool(module_pool: Pool):
    """The module's pool, with no call session left from an earlier test."""
    for key in module_pool.client.scan_iter(match="sb:call:*:session"):
        module_pool.client.delete(key)
    yield module_pool


@pytest.fixture
def victim(pool: Pool):
    """A worker with three slots: the orchestrator places the next call on it, not the keeper."""
    worker = start_worker(pool.redis.url, "victim", max_calls=3, env=ENV)
    wait_for(lambda: pool.live_workers() == 2, what="the victim registered")
    try:
        yield worker
    finally:
        worker.stop()
        wait_for(lambda: pool.live_workers() == 1, what="the victim gone from the pool")


async def _call_until_first_reply(pool: Pool, script: CallScript):
    """Start the call; return its task and the session once the first reply was given."""
    call = asyncio.create_task(run_call(pool.orchestrator.base_url, script, transcribe=False))
    session = await asyncio.to_thread(
        wait_for, lambda: (s := _session(pool.client)) and _agent_said(s, "boat") and s, 30, 0.05, "first reply"
    )
    return call, session


async def test_a_worker_killed_mid_call_leaves_its_caller_talking_to_another(
    pool: Pool, victim: Server, speech_clips: dict[str, Clip]
) -> None:
    call, before = await _call_until_first_reply(pool, _two_turns(speech_clips))
    assert before["worker"] == "victim", before
    victim.process.kill()  # SIGKILL: no drain, no goodbye, its sockets just drop
    result = await call
    after = _session(pool.client)
    assert after is not None
    _assert_carried_on(result, before, after, pool.keeper)
    silence = result.resumes[0].silence_s
    print(f"after kill -9: {result.resumes[0]}; turns {[(t.voice_to_voice_ms, t.across_resume) for t in result.turns]}")
    assert silence is not None and silence <= MAX_SILENCE_S, result.resumes


async def test_a_drain_out_of_time_hands_the_call_to_another_worker(
    pool: Pool, victim: Server, speech_clips: dict[str, Clip]
) -> None:
    call, before = await _call_until_first_reply(pool, _two_turns(speech_clips))
    assert before["worker"] == "victim", before
    os.kill(victim.process.pid, signal.SIGTERM)  # drain timeout 1 s: the call outlasts it
    result = await call
    assert await asyncio.to_thread(victim.process.wait, 30) == 0
    after = _session(pool.client)
    assert after is not None
    _assert_carried_on(result, before, after, pool.keeper)
    assert result.resumes[0].silence_s is not None and result.resumes[0].silence_s <= MAX_SILENCE_S


async def test_the_redirect_after_a_call_the_agent_ended_hangs_up(
    pool: Pool, speech_clips: dict[str, Clip]
) -> None:
    goodbye = CallScript(
        turns=[CallerTurn(audio=speech_clips["osr_us_0010_s01_8k.wav"].path),
               CallerTurn(audio=speech_clips["fw_stereo_right_16k.wav"].path, hangup_expected=True)]  # horizon
    )
    result = await run_call(pool.orchestrator.base_url, goodbye, transcribe=False)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, format_summary(result)
    assert result.resumes == []
    session = _session(pool.client)
    assert session is not None and session["ended"], session
    assert session["resumes"] == 0, session


async def test_a_redis_restart_mid_call_costs_the_call_nothing(pool: Pool, speech_clips: dict[str, Clip]) -> None:
    call, _before = await _call_until_first_reply(pool, _two_turns(speech_clips))
    assert pool.redis.process is not None
    pool.redis.process.kill()  # SIGKILL: what the append-only file holds comes back
    pool.redis.process.wait()
    pool.redis.start()
    result = await call
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.resumes == [], summary  # the stream never moved
    assert all(t.voice_to_voice_ms is not None for t in result.turns), summary
    # The session is written again after the restart: the last reply is in it.
    session = await asyncio.to_thread(
        wait_for, lambda: (s := _session(pool.client)) and _agent_said(s, REPLIES["food"]) and s, 10, 0.05, "session"
    )
    assert len([m for m in session["history"] if m.get("role") == "user"]) == 2, session["history"]
