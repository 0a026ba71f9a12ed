"""A call survives its worker: killed (kill -9) or drained out of time mid-call, the caller is
carried on by another worker with the conversation so far (issue 14, part 3).

Real processes: Redis, an orchestrator (public edge) and two workers; the caller simulator
plays Twilio, including the ``<Redirect>`` that follows every stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import httpx
import pytest
import redis

from conftest import (
    OPERATOR,
    REPLIES,
    Clip,
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


def _three_turns(clips: dict[str, Clip]) -> CallScript:
    return CallScript(
        turns=[
            CallerTurn(audio=clips["osr_us_0010_s01_8k.wav"].path),  # boats
            CallerTurn(audio=clips["osr_us_0010_s04_8k.wav"].path, pause_before_ms=1500),  # food
            CallerTurn(audio=clips["osr_us_0010_s05_8k.wav"].path),  # food
        ]
    )


def _assert_carried_on(result: CallResult, session: dict, survivor: str, workers: dict[str, Server]) -> None:
    summary = format_summary(result) + f"\nresumes: {result.resumes}"
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert len(result.resumes) == 1, summary
    assert all(t.voice_to_voice_ms is not None for t in result.turns), summary
    # The conversation went on where it was: the first turn (answered by the lost worker) is
    # in the context the survivor carried on with, and it answered the turns after.
    assert session["worker"] == survivor, session
    user_turns = [m for m in session["history"] if m.get("role") == "user"]
    assert "canoe" in str(user_turns[0]).lower(), session["history"]
    assert _agent_said(session, REPLIES["food"]), session["history"]
    record = _record_on(workers[survivor], result.call_sid)
    assert any(e["event"] == "resumed" for e in record["events"]), record["events"]
    assert "food" in record["intents"], record


@pytest.fixture
def pool(tmp_path: Path):
    server = start_redis(tmp_path)
    env = {"SWITCHBOARD_API_KEY": OPERATOR["X-API-Key"], "SWITCHBOARD_DRAIN_TIMEOUT_SECS": "1"}
    orchestrator = start_orchestrator(server.url, env)
    workers = {name: start_worker(server.url, name, max_calls=2, env=env) for name in ("w1", "w2")}
    client = redis.Redis.from_url(server.url)
    wait_for(lambda: client.scard("sb:workers") == 2, what="both workers registered")
    try:
        yield server, client, orchestrator, workers
    finally:
        for process in [*workers.values(), orchestrator]:
            process.stop()
        client.close()
        server.stop()


async def _call_until_first_reply(orchestrator: Server, client: redis.Redis, script: CallScript):
    """Start the call; return its task and the session once the first reply was given."""
    call = asyncio.create_task(run_call(orchestrator.base_url, script, transcribe=False))
    session = await asyncio.to_thread(
        wait_for, lambda: (s := _session(client)) and _agent_said(s, "boat") and s, 30, 0.05, "first reply"
    )
    return call, session


async def test_a_worker_killed_mid_call_leaves_its_caller_talking_to_another(
    pool, speech_clips: dict[str, Clip]
) -> None:
    _redis, client, orchestrator, workers = pool
    call, session = await _call_until_first_reply(orchestrator, client, _three_turns(speech_clips))
    victim = session["worker"]
    survivor = next(w for w in workers if w != victim)
    workers[victim].process.kill()  # SIGKILL: no drain, no goodbye, its sockets just drop
    result = await call
    session = _session(client)
    assert session is not None
    _assert_carried_on(result, session, survivor, workers)
    silence = result.resumes[0].silence_s
    print(f"after kill -9: {result.resumes[0]}; turns {[(t.voice_to_voice_ms, t.across_resume) for t in result.turns]}")
    assert silence is not None and silence <= MAX_SILENCE_S, result.resumes


async def test_a_drain_out_of_time_hands_the_call_to_another_worker(
    pool, speech_clips: dict[str, Clip]
) -> None:
    _redis, client, orchestrator, workers = pool
    call, session = await _call_until_first_reply(orchestrator, client, _three_turns(speech_clips))
    leaving = session["worker"]
    staying = next(w for w in workers if w != leaving)
    os.kill(workers[leaving].process.pid, signal.SIGTERM)  # drain timeout 1 s: the call outlasts it
    result = await call
    assert await asyncio.to_thread(workers[leaving].process.wait, 30) == 0
    session = _session(client)
    assert session is not None
    _assert_carried_on(result, session, staying, workers)
    assert result.resumes[0].silence_s is not None and result.resumes[0].silence_s <= MAX_SILENCE_S


async def test_the_redirect_after_a_call_the_agent_ended_hangs_up(
    pool, speech_clips: dict[str, Clip]
) -> None:
    _redis, client, orchestrator, _workers = pool
    goodbye = CallScript(
        turns=[CallerTurn(audio=speech_clips["osr_us_0010_s01_8k.wav"].path),
               CallerTurn(audio=speech_clips["fw_stereo_right_16k.wav"].path, hangup_expected=True)]  # horizon
    )
    result = await run_call(orchestrator.base_url, goodbye, transcribe=False)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, format_summary(result)
    assert result.resumes == []
    session = _session(client)
    assert session is not None and session["ended"], session
    assert session["resumes"] == 0, session


async def test_a_redis_restart_mid_call_costs_the_call_nothing(pool, speech_clips: dict[str, Clip]) -> None:
    server, client, orchestrator, _workers = pool
    call, _session_before = await _call_until_first_reply(orchestrator, client, _three_turns(speech_clips))
    assert server.process is not None
    server.process.kill()  # SIGKILL: what the append-only file holds comes back
    server.process.wait()
    server.start()
    result = await call
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.resumes == [], summary  # the stream never moved
    assert all(t.voice_to_voice_ms is not None for t in result.turns), summary
    # The session is written again after the restart: the last reply is in it.
    session = await asyncio.to_thread(
        wait_for, lambda: (s := _session(client)) and _agent_said(s, REPLIES["food"]) and s, 10, 0.05, "session"
    )
    assert len([m for m in session["history"] if m.get("role") == "user"]) == 3, session["history"]
