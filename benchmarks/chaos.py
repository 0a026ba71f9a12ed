"""Chaos under load: live calls while a worker is killed, Redis restarts and a provider dies.

Starts the ``cloud`` stack (emulated Deepgram + ElevenLabs, scripted responder; Redis with its
append-only file, as ``switchboard up`` runs it) with ``--workers`` workers, places ``--calls``
staggered calls of ``--turns`` turns each through the caller simulator (which plays Twilio,
``<Redirect>`` included), and once every call is live: kills one worker with SIGKILL, then
SIGKILLs Redis and starts it again from its append-only file, then SIGKILLs the Deepgram
emulator. Reports calls dropped (goal 0), turns without a reply, the silence each caller heard
when its call moved, voice-to-voice latency per phase, and what the stack counted (calls
resumed, provider fallbacks). Writes ``benchmarks/results/chaos.json`` and the "Chaos" section
of ``docs/performance.md``.

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/chaos.py [--calls 20] [--workers 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import redis

from _common import (
    CLIPS,
    scrape_metrics,
    start_stack,
    stop_stack,
    summarize,
    update_doc_section,
    write_result,
)
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, CallResult

# Clips whose words the test agent answers with an ordinary reply (the "horizon" clip says goodbye).
_CLIPS = sorted(p for p in CLIPS.glob("*_known_end.wav") if "fw_stereo_right" not in p.name)
_COUNTER = re.compile(r'^(calls_resumed_total|provider_fallbacks_total)\{(\w+)="([^"]+)"\} ([0-9.e+]+)$', re.M)


def _script(index: int, turns: int) -> CallScript:
    return CallScript(
        turns=[CallerTurn(audio=_CLIPS[(index + k) % len(_CLIPS)]) for k in range(turns)],
        reply_timeout_ms=8_000,
    )


def _counters(urls: list[str]) -> dict[str, float]:
    """calls_resumed_total / provider_fallbacks_total by label, summed over the processes."""
    totals: dict[str, float] = {}
    for url in urls:
        if (text := scrape_metrics(url)) is None:
            continue  # a process we killed
        for name, _label, value, count in _COUNTER.findall(text):
            key = f"{name}{{{value}}}"
            totals[key] = totals.get(key, 0.0) + float(count)
    return totals


def _restart_redis(process: subprocess.Popen, url: str) -> tuple[subprocess.Popen, float]:
    """SIGKILL Redis and start it again with the same argv (its append-only file); returns the new
    process and how long Redis was unreachable."""
    down = time.monotonic()
    process.kill()
    process.wait()
    again = subprocess.Popen(process.args, stdout=subprocess.DEVNULL)
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    while True:
        try:
            if client.ping():
                break
        except redis.RedisError:
            time.sleep(0.02)
    client.close()
    return again, time.monotonic() - down


async def _run(url: str, roles: dict, worker_urls: list[str], args) -> dict:
    redis_role, emulators, workers = roles["redis"], roles["emulators"], roles["workers"]
    redis_url = f"redis://127.0.0.1:{redis_role.processes[0].args[2]}/0"
    faults: list[dict] = []
    async with httpx.AsyncClient(timeout=10) as client:
        calls = []
        for i in range(args.calls):
            calls.append(asyncio.create_task(
                run_call(url, _script(i, args.turns), transcribe=False, http_client=client, max_call_s=600)))
            await asyncio.sleep(args.stagger)
        started = time.time()
        await asyncio.sleep(args.settle)

        async def fault(name: str, action) -> None:
            at = time.time()
            detail = await asyncio.to_thread(action)
            faults.append({"fault": name, "at_s": round(at - started, 2), **(detail or {})})
            print(f"{at - started:6.1f} s  {name} {detail or ''}", flush=True)
            await asyncio.sleep(args.gap)

        def kill_worker() -> dict:
            workers.processes[0].kill()
            return {"worker": workers.labels[0]}

        def restart_redis() -> dict:
            redis_role.processes[0], down = _restart_redis(redis_role.processes[0], redis_url)
            return {"unreachable_s": round(down, 3)}

        def kill_deepgram() -> dict:
            emulators.processes[emulators.labels.index("deepgram")].send_signal(signal.SIGKILL)
            return {}

        await fault("kill -9 worker", kill_worker)
        await fault("Redis SIGKILL + restart (AOF)", restart_redis)
        await fault("Deepgram emulator SIGKILL", kill_deepgram)
        results: list[CallResult] = await asyncio.gather(*calls)
    counters = _counters([url, *worker_urls[1:]])
    return _report(results, faults, started, counters, args)


def _report(results: list[CallResult], faults: list[dict], started: float, counters: dict, args) -> dict:
    phases = [("before the faults", float("-inf"))] + [(f"after: {f['fault']}", f["at_s"]) for f in faults]
    by_phase: dict[str, list[float]] = {name: [] for name, _ in phases}
    turns = no_reply = across = 0
    windows: dict[int, list[float]] = {}
    for result in results:
        base = result.started_at.timestamp() - started
        for turn in result.turns:
            turns += 1
            if turn.voice_to_voice_ms is None:
                no_reply += 1
                continue
            if turn.across_resume:
                across += 1
                continue
            at = base + turn.caller_speech_end_s
            phase = next(name for name, start in reversed(phases) if at >= start)
            by_phase[phase].append(turn.voice_to_voice_ms)
            windows.setdefault(max(0, int(at // 10)), []).append(turn.voice_to_voice_ms)
    silences = [r.silence_s for res in results for r in res.resumes if r.silence_s is not None]
    dropped = [r for r in results if r.outcome is not CallOutcome.COMPLETED]
    failures = []
    for result in dropped:
        base = result.started_at.timestamp() - started
        turn = next((t for t in result.turns if t.failure), None)
        at = base + turn.caller_speech_end_s if turn is not None else None
        failures.append({
            "call": result.call_sid, "reason": result.reason, "moved": len(result.resumes),
            "turn": turn.index if turn is not None else None,
            "at_s": round(at, 2) if at is not None else None,
            "phase": next(name for name, start in reversed(phases) if at >= start) if at is not None else None,
        })
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "calls": len(results), "turns_per_call": args.turns, "workers": args.workers,
        "dropped": len(dropped),
        "dropped_reasons": sorted({f"{r.outcome.value}: {r.reason}" for r in dropped}),
        "failures": failures,
        "faults": faults,
        "calls_moved": sum(1 for r in results if r.resumes),
        "silence_s": summarize(silences),
        "turns": turns, "turns_without_reply": no_reply, "turns_across_a_move": across,
        "latency_ms_by_phase": {name: summarize(values) for name, values in by_phase.items()},
        "latency_ms_by_10s": {f"{k * 10}-{k * 10 + 10} s": summarize(v) for k, v in sorted(windows.items())},
        "counters": counters,
        "call_duration_s": summarize([r.duration_s for r in results]),
    }


def _markdown(data: dict, command: str) -> str:
    rows = "\n".join(
        f"| {name} | {s['n']} | {s['p50']} | {s['p95']} |" for name, s in data["latency_ms_by_phase"].items()
    )
    faults = "; ".join(
        f"{f['at_s']:.0f} s: {f['fault']}" + (f" (down {f['unreachable_s']} s)" if "unreachable_s" in f else "")
        for f in data["faults"]
    )
    silence = data["silence_s"]
    counters = ", ".join(f"{k} = {v:g}" for k, v in sorted(data["counters"].items())) or "none"
    return f"""## Chaos under load

`{command}` — {data['calls']} concurrent calls of {data['turns_per_call']} turns on {data['workers']} workers
(cloud configuration, Redis with its append-only file), faults once every call is live: {faults}.
Machine load average at the end: {", ".join(f"{x:.2f}" for x in data['machine']['load'])}.

- **Calls dropped: {data['dropped']} of {data['calls']}** (goal 0){": " + ", ".join(data['dropped_reasons']) if data['dropped'] else ""}.
- Calls moved to another worker (the killed one's): {data['calls_moved']}; silence the caller heard
  while its call moved: p50 {silence['p50']} s, max {silence['max']} s (goal ≤ 3 s).
- Turns: {data['turns']}; without a reply: {data['turns_without_reply']}; waiting for a reply while their call
  moved (answered by the new worker's "sorry, could you say that again", left out of the latencies):
  {data['turns_across_a_move']}.
- Counted by the stack: {counters}.

| phase | turns | p50 ms | p95 ms |
|---|---|---|---|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--turns", type=int, default=14)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--max-calls", type=int, default=12, help="slots per worker")
    parser.add_argument("--stagger", type=float, default=0.5, help="seconds between call starts")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after the last start before the first fault")
    parser.add_argument("--gap", type=float, default=12.0, help="seconds between faults")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sb-chaos-"))
    logs = tmp / "logs"
    logs.mkdir()
    url, role_list, worker_urls = start_stack(
        "cloud", args.workers, args.max_calls, tmp, logs=logs, worker_prefix="chaos", redis_aof=True
    )
    roles = {r.name: r for r in role_list}
    try:
        began = time.monotonic()
        data = asyncio.run(_run(url, roles, worker_urls, args))
        data["wall_s"] = str(timedelta(seconds=round(time.monotonic() - began)))
    finally:
        stop_stack(role_list)
    data["logs"] = str(logs)
    write_result("chaos", data)
    command = "benchmarks/chaos.py" + (f" --calls {args.calls}" if args.calls != 20 else "")
    print(_markdown(data, command))
    if not args.no_docs:
        update_doc_section("chaos", _markdown(data, command))


if __name__ == "__main__":
    main()
