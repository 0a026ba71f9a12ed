"""Dispatch latency and throughput: orchestrator → Redis stream → worker, with real processes.

Measures, for call jobs sent to ``POST /manual/dispatch``:
- dispatch latency (job created by the orchestrator → claimed by a worker → the job's code
  running on the worker) at queue depth 1 (one job at a time) and with 50 jobs queued at once;
- how many jobs per second one orchestrator + Redis accept and the pool claims.

Jobs are TEST jobs (hold a slot for 0 s), so the numbers are the dispatch path alone. Writes
``benchmarks/results/dispatch.json`` and a table in ``docs/performance.md``.

    .venv/bin/python benchmarks/dispatch.py [--sequential 200] [--burst 50] [--throughput 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import redis

from _common import (
    RESULTS,
    cli,
    free_port,
    start_process,
    stop_process,
    summarize,
    update_doc_section,
    write_result,
)

API_KEY = "bench-key"


def start_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


async def dispatch(client: httpx.AsyncClient, base: str) -> str:
    response = await client.post(
        f"{base}/manual/dispatch", json={"kind": "test", "duration_secs": 0}, headers={"X-API-Key": API_KEY}
    )
    response.raise_for_status()
    return response.json()["call_id"]


def timings(r: redis.Redis, call_ids: list[str], limit_secs: float = 60) -> list[dict]:
    """Wait until every job completed, then read its claim and ready times from call state."""
    deadline = time.monotonic() + limit_secs
    pending = set(call_ids)
    while pending and time.monotonic() < deadline:
        with r.pipeline(transaction=False) as pipe:
            for c in pending:
                pipe.hget(f"sb:call:{c}", "status")
            statuses = pipe.execute()
        pending = {c for c, s in zip(list(pending), statuses, strict=True) if s != b"completed"}
        if pending:
            time.sleep(0.05)
    if pending:
        raise TimeoutError(f"{len(pending)} jobs not completed")
    with r.pipeline(transaction=False) as pipe:
        for c in call_ids:
            pipe.hmget(f"sb:call:{c}", "claim_ms", "ready_ms", "runs")
        rows = pipe.execute()
    return [{"claim_ms": float(a), "ready_ms": float(b), "runs": int(n)} for a, b, n in rows]


async def sequential(base: str, r: redis.Redis, n: int) -> list[dict]:
    out = []
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(n):
            call_id = await dispatch(client, base)
            out += await asyncio.to_thread(timings, r, [call_id])
    return out


async def burst(base: str, r: redis.Redis, n: int) -> list[dict]:
    async with httpx.AsyncClient(timeout=10) as client:
        call_ids = await asyncio.gather(*[dispatch(client, base) for _ in range(n)])
    return await asyncio.to_thread(timings, r, list(call_ids))


async def throughput(base: str, r: redis.Redis, n: int, concurrency: int = 32) -> dict:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    call_ids: list[str] = []

    async def sender(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            call_ids.append(await dispatch(client, base))

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*[sender(client) for _ in range(concurrency)])
    accepted = time.perf_counter() - started
    rows = await asyncio.to_thread(timings, r, call_ids, 120)
    finished = time.perf_counter() - started
    return {
        "jobs": n,
        "accepted_per_sec": round(n / accepted, 1),
        "completed_per_sec": round(n / finished, 1),
        "claim_ms": summarize([x["claim_ms"] for x in rows]),
        "runs_max": max(x["runs"] for x in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--throughput", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="sb-dispatch-"))
    redis_process, redis_url = start_redis(data_dir)
    env = {"SWITCHBOARD_REDIS_URL": redis_url, "SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_LOG_LEVEL": "WARNING",
           "SWITCHBOARD_MAX_CALLS": "100", "SWITCHBOARD_INFERENCE_THREADS": "1"}
    processes = []
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        processes.append(start_process(cli("orchestrator", "--port", str(port)), f"{base}/health/live",
                                       RESULTS / "dispatch_orchestrator.log", env))
        for i in range(args.workers):
            wport = free_port()
            processes.append(start_process(
                cli("worker", "--port", str(wport), "--worker-id", f"bench-{i}"),
                f"http://127.0.0.1:{wport}/health", RESULTS / f"dispatch_worker{i}.log", env))
        r = redis.Redis.from_url(redis_url)
        asyncio.run(sequential(base, r, 20))  # warm-up: connections, scripts
        seq = asyncio.run(sequential(base, r, args.sequential))
        bur = asyncio.run(burst(base, r, args.burst))
        thr = asyncio.run(throughput(base, r, args.throughput))
    finally:
        for p in reversed(processes):
            stop_process(p)
        redis_process.terminate()
        shutil.rmtree(data_dir, ignore_errors=True)

    data = {
        "machine": {"cpus": os.cpu_count(), "arch": platform.machine()},
        "workers": args.workers,
        "depth_1": {"claim_ms": summarize([x["claim_ms"] for x in seq]), "ready_ms": summarize([x["ready_ms"] for x in seq])},
        f"burst_{args.burst}": {"claim_ms": summarize([x["claim_ms"] for x in bur]), "ready_ms": summarize([x["ready_ms"] for x in bur])},
        "throughput": thr,
    }
    write_result("dispatch", data)
    d1, b = data["depth_1"], data[f"burst_{args.burst}"]
    markdown = "\n".join([
        "## Dispatch (`benchmarks/dispatch.py`)",
        "",
        f"One orchestrator, Redis (AOF, fsync every second) and {args.workers} worker processes on this 2-core machine; "
        "TEST jobs through `POST /manual/dispatch`, so this is the dispatch path alone (goal: p95 < 20 ms to claim).",
        "",
        "| jobs in the queue | job created → claimed by a worker, p50 / p95 | → job running on the worker, p50 / p95 |",
        "|---|---|---|",
        f"| 1 (one at a time, {args.sequential} jobs) | {d1['claim_ms']['p50']} / {d1['claim_ms']['p95']} ms | {d1['ready_ms']['p50']} / {d1['ready_ms']['p95']} ms |",
        f"| {args.burst} (sent at once) | {b['claim_ms']['p50']} / {b['claim_ms']['p95']} ms | {b['ready_ms']['p50']} / {b['ready_ms']['p95']} ms |",
        "",
        f"Throughput: {thr['jobs']} jobs from 32 concurrent HTTP clients: the orchestrator accepted "
        f"**{thr['accepted_per_sec']} jobs/s** and the pool finished {thr['completed_per_sec']} jobs/s "
        f"(claim p95 under that load {thr['claim_ms']['p95']} ms; no job ran twice: max runs {thr['runs_max']}).",
    ])
    update_doc_section("dispatch", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
