"""Capacity: the most concurrent calls whose p95 voice-to-voice stays under 1 s with ≥ 95 % success.

Starts the local stack (Redis, orchestrator, workers; offline engines, the speech-clip test
agent) unless ``--url`` is given, then runs the load generator at rising concurrency levels
until one misses a limit. Also reports the load generator's own CPU per simulated call (goal:
under 0.5 % of a core). Writes ``benchmarks/results/loadtest_capacity.json``, each level's full
report under ``benchmarks/results/loadtest_capacity/``, plots under ``docs/img/`` and a section
in ``docs/performance.md``.

    .venv/bin/python benchmarks/loadtest_capacity.py [--levels 1,2,3,4,6,8] [--calls-per-slot 3]
        [--workers 2] [--standalone] [--url http://127.0.0.1:8080] [--no-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from _common import (
    IMG,
    RESULTS,
    TEST_AGENT,
    cli,
    free_port,
    start_process,
    stop_process,
    update_doc_section,
    write_result,
)
from switchboard.agent.config import load_agent_config
from switchboard.loadtest.clarity import ClarityJudge
from switchboard.loadtest.html_report import figures, summarize, write_outputs
from switchboard.loadtest.loadgen import LoadTestConfig, run_load_test
from switchboard.loadtest.plots import capacity, save_png

AGENT = TEST_AGENT
P95_LIMIT_MS = 1000.0
SUCCESS_LIMIT = 0.95
CPU_GOAL_PCT = 0.5


def start_stack(args: argparse.Namespace, log_dir: Path, data_dir: str) -> tuple[str, subprocess.Popen]:
    """The local stack (or a standalone agent) on free ports; returns its URL and process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if args.standalone:
        argv = cli("serve", "--port", str(port), "--agent", str(AGENT))
        return url, start_process(argv, f"{url}/health", log_dir / "agent.log")
    env = {"SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "SWITCHBOARD_MAX_CALLS": str(args.max_calls)}
    argv = cli("up", "--port", str(port), "--workers", str(args.workers), "--agent", str(AGENT),
               "--data-dir", data_dir)
    process = start_process(argv, f"{url}/health", log_dir / "stack.log", env=env)
    deadline = time.monotonic() + 180
    while httpx.get(f"{url}/health", timeout=2).json().get("live_workers", 0) < args.workers:
        if time.monotonic() > deadline:
            stop_process(process)
            raise TimeoutError(f"{args.workers} workers not live after 180 s")
        time.sleep(0.5)
    return url, process


def run_level(url: str, level: int, args: argparse.Namespace, judge: ClarityJudge) -> dict:
    out = RESULTS / "loadtest_capacity" / f"concurrency-{level}"
    config = LoadTestConfig(
        url=url, concurrency=level, calls=level * args.calls_per_slot, ramp_up_s=level * 0.5,
        seed=level, record_fraction=0.25, max_recordings=4, out_dir=out,
    )
    run = run_load_test(config, clarity_judge=judge)
    write_outputs(run, out)
    s = summarize(run)
    row = {
        "concurrency": level,
        "calls": s.calls,
        "success_rate": s.success_rate,
        "failure_reasons": s.failure_reasons,
        "voice_to_voice_ms": s.voice_to_voice_ms.model_dump(),
        "greeting_ms": s.greeting_ms.model_dump(),
        "clarity": s.clarity,
        "loadgen_cpu_per_call_pct": s.cpu_per_call_pct,
        "max_clock_lag_ms": s.max_clock_lag_ms,
        "mean_concurrency": s.mean_concurrency,
        "report": str(out / "report.html"),
    }
    p95 = s.voice_to_voice_ms.p95
    row["passed"] = p95 is not None and p95 < P95_LIMIT_MS and (s.success_rate or 0) >= SUCCESS_LIMIT
    print(f"concurrency {level}: success {s.success_rate:.0%}, p95 {p95} ms, "
          f"clarity {s.clarity}, loadgen CPU {s.cpu_per_call_pct} %/call -> "
          f"{'pass' if row['passed'] else 'FAIL'}", flush=True)
    row["_run"] = run
    return row


def markdown(data: dict) -> str:
    rows = data["levels"]
    best = data["capacity"]
    cpu = [r["loadgen_cpu_per_call_pct"] for r in rows if r["loadgen_cpu_per_call_pct"] is not None]
    setup = f"the local stack with {data['workers']} workers" if not data["standalone"] else "a standalone agent"
    lines = [
        "## Capacity under load (`benchmarks/loadtest_capacity.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {data['cpus']} cores against "
        f"{setup} ({data['max_calls']} call slots each; offline engines, the speech-clip test agent); the load generator ran on the same "
        f"machine. Each level places {data['calls_per_slot']} calls per caller slot of the default "
        "scenario (real speech clips, random pauses, some barge-ins, a goodbye).",
        "",
        f"**Capacity: {best if best else 'none'} concurrent calls** with p95 voice-to-voice under "
        f"{P95_LIMIT_MS:.0f} ms and success ≥ {SUCCESS_LIMIT:.0%}.",
        "",
        "| concurrent calls | calls | success | p50 | p95 | max | clarity | load generator CPU per call | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v = r["voice_to_voice_ms"]
        clarity = "–" if r["clarity"] is None else f"{r['clarity']:.0%}"
        lines.append(
            f"| {r['concurrency']} | {r['calls']} | {r['success_rate']:.0%} | {v['p50']} ms | {v['p95']} ms "
            f"| {v['max']} ms | {clarity} | {r['loadgen_cpu_per_call_pct']} % | {'pass' if r['passed'] else 'fail'} |"
        )
    failures = {k: n for r in rows for k, n in r["failure_reasons"].items()}
    if failures:
        lines += ["", "Failure reasons: " + ", ".join(f"{k} ×{n}" for k, n in failures.items())]
    if cpu:
        lines += [
            "",
            f"The load generator's own CPU: {min(cpu):.2f}–{max(cpu):.2f} % of a core per simulated call "
            f"(goal < {CPU_GOAL_PCT} %); it falls as calls share the event loop's wake-ups.",
        ]
    lines += ["", "![capacity](img/loadtest_capacity.png)"]
    if best:
        lines += [
            "",
            f"At {best} concurrent calls:",
            "",
            "![latency CDF](img/loadtest_latency_cdf.png)",
            "![latency over time](img/loadtest_latency_over_time.png)",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="measure a running stack instead of starting one")
    parser.add_argument("--levels", default="1,2,3,4,6,8", help="concurrency levels, ascending")
    parser.add_argument("--calls-per-slot", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-calls", type=int, default=12, help="slots per worker (enough not to cap the sweep)")
    parser.add_argument("--standalone", action="store_true", help="one standalone agent instead of the stack")
    parser.add_argument("--keep-going", action="store_true", help="run every level even after one fails")
    parser.add_argument("--no-docs", action="store_true", help="results only; leave docs/ alone (trial runs)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    judge = ClarityJudge(load_agent_config(AGENT))
    process = None
    url = args.url
    data_dir = tempfile.TemporaryDirectory(prefix="switchboard-capacity-")
    if url is None:
        url, process = start_stack(args, RESULTS / "loadtest_capacity", data_dir.name)
    rows: list[dict] = []
    try:
        for level in levels:
            rows.append(run_level(url, level, args, judge))
            if not rows[-1]["passed"] and not args.keep_going:
                break
    finally:
        if process is not None:
            stop_process(process)
        data_dir.cleanup()
    passing = [r for r in rows if r["passed"]]
    best = max(passing, key=lambda r: r["concurrency"]) if passing else None
    runs = {r["concurrency"]: r.pop("_run") for r in rows}
    data = {
        "levels": rows, "capacity": best["concurrency"] if best else None, "workers": args.workers,
        "max_calls": args.max_calls,
        "standalone": args.standalone, "calls_per_slot": args.calls_per_slot, "cpus": os.cpu_count(),
        "limits": {"p95_ms": P95_LIMIT_MS, "success_rate": SUCCESS_LIMIT},
    }
    path = write_result("loadtest_capacity", data)
    text = markdown(data)
    print(text)
    print(f"\nresults: {path}")
    if not args.no_docs:
        fig = capacity([r["concurrency"] for r in rows], [r["voice_to_voice_ms"]["p95"] for r in rows],
                       [r["success_rate"] or 0 for r in rows], P95_LIMIT_MS, SUCCESS_LIMIT)
        save_png(fig, IMG / "loadtest_capacity.png")
        if best:
            run = runs[best["concurrency"]]
            figs = figures(run, summarize(run))
            save_png(figs["latency_cdf"], IMG / "loadtest_latency_cdf.png")
            save_png(figs["latency_over_time"], IMG / "loadtest_latency_over_time.png")
        update_doc_section("loadtest_capacity", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
