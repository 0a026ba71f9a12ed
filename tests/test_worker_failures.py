"""Failure drills with real processes: a worker killed mid-job, Redis restarted, a worker drained."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from xml.etree import ElementTree

import httpx
from websockets.asyncio.client import connect

from conftest import (
    REPLIES,
    Clip,
    Server,
    ServerGroup,
    agent_lines,
    start_orchestrator,
    start_redis,
    start_worker,
    stored_call,
    wait_for,
)
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary

API_KEY = "drill-key"
ENV = {"SWITCHBOARD_API_KEY": API_KEY}


def dispatch(orchestrator: Server, duration_secs: float) -> str:
    response = httpx.post(
        f"{orchestrator.base_url}/manual/dispatch",
        json={"kind": "test", "duration_secs": duration_secs},
        headers={"X-API-Key": API_KEY},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()["call_id"]


def call_state(orchestrator: Server, call_id: str) -> dict:
    return httpx.get(f"{orchestrator.base_url}/calls/{call_id}", headers={"X-API-Key": API_KEY}, timeout=5).json()


def stats(orchestrator: Server) -> dict:
    return httpx.get(f"{orchestrator.base_url}/stats", headers={"X-API-Key": API_KEY}, timeout=5).json()


def test_killed_worker_jobs_run_on_another_worker_within_5_s_and_complete_once(tmp_path: Path) -> None:
    with ServerGroup() as group:
        redis = group.add(start_redis(tmp_path))
        orchestrator = group.add(start_orchestrator(redis.url, ENV))
        workers = dict(zip("ab", group.start_workers(redis.url, ["a", "b"], max_calls=3, env=ENV), strict=True))
        wait_for(lambda: len(stats(orchestrator)["workers"]) == 2, what="workers registered")
        calls = [dispatch(orchestrator, duration_secs=8) for _ in range(3)]
        owners = wait_for(
            lambda: all(call_state(orchestrator, c).get("status") == "running" for c in calls)
            and {c: call_state(orchestrator, c)["owner"] for c in calls},
            what="all jobs running",
        )
        victim = max(workers, key=lambda w: sum(1 for o in owners.values() if o == w))
        survivor = next(w for w in workers if w != victim)
        orphaned = [c for c, o in owners.items() if o == victim]
        workers[victim].process.kill()  # SIGKILL: no drain, no acknowledgement
        killed_at = time.monotonic()
        wait_for(
            lambda: all(call_state(orchestrator, c).get("owner") == survivor for c in orphaned),
            limit_secs=5,
            interval=0.05,
            what="orphaned jobs reclaimed by the survivor",
        )
        print(f"reclaimed {len(orphaned)} job(s) in {time.monotonic() - killed_at:.2f} s")
        final = wait_for(
            lambda: all(call_state(orchestrator, c).get("status") == "completed" for c in calls)
            and [call_state(orchestrator, c) for c in calls],
            limit_secs=20,
            what="all jobs completed",
        )
        assert all(s["completions"] == "1" for s in final), final
        assert all(s["runs"] == ("2" if c in orphaned else "1") for c, s in zip(calls, final, strict=True)), final
        after = stats(orchestrator)
        assert after["queue_length"] == 0 and after["jobs_pending_ack"] == 0, after
        assert [w["worker_id"] for w in after["workers"]] == [survivor]


def test_queued_jobs_survive_a_redis_crash_with_aof(tmp_path: Path) -> None:
    with ServerGroup() as group:
        redis = group.add(start_redis(tmp_path))
        orchestrator = group.add(start_orchestrator(redis.url, ENV))
        calls = [dispatch(orchestrator, duration_secs=0.1) for _ in range(5)]
        assert stats(orchestrator)["queue_length"] == 5
        assert redis.process is not None
        redis.process.kill()  # SIGKILL: only what the append-only file holds survives
        redis.process.wait()
        redis.start()
        assert wait_for(lambda: stats(orchestrator)["queue_length"] == 5, what="jobs back after restart")
        group.add(start_worker(redis.url, "late", max_calls=2, env=ENV))
        wait_for(
            lambda: all(call_state(orchestrator, c).get("status") == "completed" for c in calls),
            limit_secs=20,
            what="recovered jobs completed",
        )


async def test_sigterm_drains_a_live_call_and_claims_nothing_new(
    tmp_path: Path, speech_clips: dict[str, Clip]
) -> None:
    with ServerGroup() as group:
        redis = group.add(start_redis(tmp_path))
        orchestrator = group.add(start_orchestrator(redis.url, ENV))
        worker = group.add(
            start_worker(redis.url, "drainer", max_calls=2, env={**ENV, "SWITCHBOARD_DRAIN_TIMEOUT_SECS": "60"})
        )
        script = CallScript(
            turns=[
                CallerTurn(audio=speech_clips["osr_us_0010_s01_8k.wav"].path),
                CallerTurn(audio=speech_clips["osr_us_0010_s04_8k.wav"].path),
            ]
        )
        call = asyncio.create_task(run_call(orchestrator.base_url, script, transcribe=False))
        await asyncio.to_thread(wait_for, lambda: stats(orchestrator)["active_calls"] == 1, 10)
        os.kill(worker.process.pid, signal.SIGTERM)
        await asyncio.to_thread(
            wait_for, lambda: stats(orchestrator)["workers"][0]["draining"], 5, 0.05, "worker draining"
        )
        queued = await asyncio.to_thread(dispatch, orchestrator, 0.1)
        async with httpx.AsyncClient(timeout=5) as client:
            busy = await client.post(f"{orchestrator.base_url}/twilio/voice", data={"CallSid": "CAdrain"})
        assert "<Say>" in busy.text, "a draining worker must not be offered new calls"

        result = await call
        assert result.outcome == CallOutcome.COMPLETED, format_summary(result)
        assert all(t.voice_to_voice_ms is not None for t in result.turns), format_summary(result)
        assert agent_lines(await stored_call(result.call_sid))[1:] == [REPLIES["boats"], REPLIES["food"]]
        assert await asyncio.to_thread(worker.process.wait, 30) == 0
        assert call_state(orchestrator, queued)["status"] == "queued"
        assert stats(orchestrator)["workers"] == []


async def test_sigterm_between_the_webhook_and_the_stream_still_takes_the_reserved_call(tmp_path: Path) -> None:
    with ServerGroup() as group:
        redis = group.add(start_redis(tmp_path))
        orchestrator = group.add(start_orchestrator(redis.url, ENV))
        worker = group.add(
            start_worker(redis.url, "late-stream", max_calls=1, env={**ENV, "SWITCHBOARD_DRAIN_TIMEOUT_SECS": "30"})
        )
        await asyncio.to_thread(wait_for, lambda: len(stats(orchestrator)["workers"]) == 1, 10)
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.post(f"{orchestrator.base_url}/twilio/voice", data={"CallSid": "CAlate"})
        stream = ElementTree.fromstring(answer.text).find("./Connect/Stream")
        assert stream is not None, answer.text
        params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        os.kill(worker.process.pid, signal.SIGTERM)  # the slot is reserved, the stream not here yet
        await asyncio.to_thread(
            wait_for, lambda: stats(orchestrator)["workers"][0]["draining"], 5, 0.05, "worker draining"
        )
        async with connect(stream.get("url"), compression=None) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {"streamSid": "MZlate", "callSid": "CAlate", "accountSid": "AC1", "customParameters": params}
            await ws.send(json.dumps({"event": "start", "streamSid": "MZlate", "start": start}))
            # Answered: the greeting's audio arrives (a refused stream is closed with 1013 instead).
            first = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert first["event"] == "media", first
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZlate", "stop": {"callSid": "CAlate"}}))
        assert await asyncio.to_thread(worker.process.wait, 30) == 0
