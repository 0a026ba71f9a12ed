"""Capacity sweep with emulated cloud engines: how many concurrent calls one 2-core machine holds.

Starts Redis, the Deepgram / ElevenLabs / LLM emulators (published latency profiles), one
orchestrator and N workers (Deepgram STT + ElevenLabs TTS + OpenAI-compatible LLM responder,
all pointed at the emulators), then runs the load generator at rising concurrency. Per level it
reports p50/p95/p99 voice-to-voice latency, success rate, and CPU and memory per process role
(read from /proc), CPU also per call. The load generator runs in this process; its CPU is
reported separately. Writes ``benchmarks/results/capacity.json``, ``docs/img/capacity.png`` and
a section of ``docs/performance.md``.

    .venv/bin/python benchmarks/capacity.py [--levels 10,25,50,75,100] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

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
from switchboard.loadtest.html_report import summarize
from switchboard.loadtest.loadgen import LoadTestConfig, run_load_test
from switchboard.loadtest.scenario import ScenarioOptions

AGENT = TEST_AGENT
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SECRETS = {"DEEPGRAM_API_KEY": "dg-bench", "ELEVENLABS_API_KEY": "el-bench", "OPENAI_API_KEY": "sk-bench"}
# What the emulated Deepgram "hears", in order, per connection: ordinary caller requests.
TRANSCRIPTS = ["I would like to book an appointment.", "What time do you open on Saturday?",
               "Can I pay my bill online?", "Thank you, that is all."]


@dataclass
class Role:
    name: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        return sum(_proc_cpu(p.pid) for p in self.processes)

    def rss_mb(self) -> float:
        return sum(_proc_rss(p.pid) for p in self.processes) / 1e6


def _proc_cpu(pid: int) -> float:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLOCK_TICKS
    except (OSError, IndexError):
        return 0.0


def _proc_rss(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0.0


def start_stack(workers: int, max_calls: int, tmp: Path) -> tuple[str, list[Role]]:
    logs = RESULTS / "capacity"
    redis_port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                              "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    transcripts = tmp / "transcripts.txt"
    transcripts.write_text("\n".join(TRANSCRIPTS * 20) + "\n")
    roles = {name: Role(name) for name in ("redis", "emulators", "orchestrator", "workers")}
    roles["redis"].processes.append(redis)
    urls = {}
    for provider, extra in (("deepgram", ["--transcripts", str(transcripts)]), ("elevenlabs", []), ("llm", [])):
        port = free_port()
        urls[provider] = f"http://127.0.0.1:{port}"
        roles["emulators"].processes.append(start_process(
            cli("emulate", provider, "--port", str(port), *extra), f"{urls[provider]}/health", logs / f"{provider}.log"))
    env = {
        **SECRETS,
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "SWITCHBOARD_MAX_CALLS": str(max_calls),
        "SWITCHBOARD_INFERENCE_THREADS": "1",
        "SWITCHBOARD_STT_ENGINE": "deepgram",
        "SWITCHBOARD_TTS_ENGINE": "elevenlabs",
        "SWITCHBOARD_RESPONDER": "openai",
        "SWITCHBOARD_DEEPGRAM_URL": urls["deepgram"].replace("http://", "ws://"),
        "SWITCHBOARD_ELEVENLABS_URL": urls["elevenlabs"].replace("http://", "ws://"),
        "SWITCHBOARD_LLM_BASE_URL": urls["llm"] + "/v1",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    roles["orchestrator"].processes.append(
        start_process(cli("orchestrator", "--port", str(port)), f"{url}/health/live", logs / "orchestrator.log", env))
    for i in range(workers):
        wport = free_port()
        roles["workers"].processes.append(start_process(
            cli("worker", "--port", str(wport), "--worker-id", f"cap-{i}", "--agent", str(AGENT)),
            f"http://127.0.0.1:{wport}/health", logs / f"worker{i}.log", env))
    return url, list(roles.values())


def run_level(url: str, level: int, roles: list[Role], calls_per_slot: int) -> dict:
    out = RESULTS / "capacity" / f"concurrency-{level}"
    config = LoadTestConfig(url=url, concurrency=level, calls=level * calls_per_slot, ramp_up_s=level * 0.1,
                            seed=level, record_fraction=0.0, max_recordings=0, out_dir=out,
                            # An LLM agent has no scripted goodbye: the caller hangs up after the last reply.
                            scenario=ScenarioOptions(goodbye=False))
    before = {r.name: r.cpu_seconds() for r in roles}
    started = time.monotonic()
    run = run_load_test(config)
    wall = time.monotonic() - started
    s = summarize(run)
    cpu = {r.name: round(100 * (r.cpu_seconds() - before[r.name]) / wall, 1) for r in roles}
    cpu["load generator"] = round(100 * s.cpu_s / wall, 1) if hasattr(s, "cpu_s") else None
    concurrency = s.mean_concurrency or level
    row = {
        "concurrency": level,
        "mean_concurrency": round(concurrency, 1),
        "calls": s.calls,
        "success_rate": s.success_rate,
        "failure_reasons": s.failure_reasons,
        "voice_to_voice_ms": s.voice_to_voice_ms.model_dump(),
        "cpu_pct_of_a_core": cpu,
        "cpu_pct_per_call": {k: (round(v / concurrency, 2) if v is not None else None) for k, v in cpu.items()},
        "rss_mb": {r.name: round(r.rss_mb(), 1) for r in roles},
        "loadgen_cpu_per_call_pct": s.cpu_per_call_pct,
        "max_clock_lag_ms": s.max_clock_lag_ms,
    }
    v = row["voice_to_voice_ms"]
    print(f"{level} calls: failures {s.failure_reasons}", flush=True)
    print(f"{level} calls: success {s.success_rate:.0%} p50 {v['p50']} p95 {v['p95']} p99 {v['p99']} ms; "
          f"CPU % of a core {cpu}", flush=True)
    return row


def markdown(data: dict) -> str:
    lines = [
        "## Capacity with emulated cloud engines (`benchmarks/capacity.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {data['cpus']} cores: Redis, the "
        f"Deepgram/ElevenLabs/LLM emulators (published latency profiles), one orchestrator and {data['workers']} "
        "worker processes (Deepgram STT + ElevenLabs TTS + LLM responder) and the load generator, all on this "
        "machine. Goal: 100 concurrent calls, p95 within 100 ms of the emulated providers' own latency, ≥ 99 % success.",
        "",
        "| concurrent calls | calls | success | p50 | p95 | p99 | CPU: workers | orchestrator | Redis | emulators | load generator | worker CPU per call | worker RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["levels"]:
        v, c, pc = r["voice_to_voice_ms"], r["cpu_pct_of_a_core"], r["cpu_pct_per_call"]
        lines.append(
            f"| {r['concurrency']} | {r['calls']} | {r['success_rate']:.0%} | {v['p50']} | {v['p95']} | {v['p99']} "
            f"| {c['workers']} % | {c['orchestrator']} % | {c['redis']} % | {c['emulators']} % | {c['load generator']} % "
            f"| {pc['workers']} % | {r['rss_mb']['workers']} MB |"
        )
    failures = {k: n for r in data["levels"] for k, n in r["failure_reasons"].items()}
    if failures:
        lines += ["", "Failure reasons: " + ", ".join(f"{k} ×{n}" for k, n in sorted(failures.items()))]
    lines += ["", "CPU is % of one core over the level's wall time (200 % = both cores); latency in ms.",
              "", "![capacity sweep](img/capacity.png)"]
    return "\n".join(lines)


def plot(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [r["concurrency"] for r in data["levels"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for q in ("p50", "p95", "p99"):
        ax1.plot(levels, [r["voice_to_voice_ms"][q] for r in data["levels"]], marker="o", label=q)
    ax1.axhline(600, color="red", linestyle="--", label="target p95 600 ms")
    ax1.set_xlabel("concurrent calls")
    ax1.set_ylabel("voice-to-voice latency (ms)")
    ax1.legend()
    for role in ("workers", "orchestrator", "redis", "emulators", "load generator"):
        ax2.plot(levels, [r["cpu_pct_of_a_core"][role] or 0 for r in data["levels"]], marker="o", label=role)
    ax2.axhline(200, color="grey", linestyle=":", label="2 cores")
    ax2.set_xlabel("concurrent calls")
    ax2.set_ylabel("CPU (% of one core)")
    ax2.legend()
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "capacity.png", dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="10,25,50,75,100")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls-per-slot", type=int, default=1)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="sb-capacity-"))
    max_calls = -(-max(levels) // args.workers) + 2
    url, roles = start_stack(args.workers, max_calls, tmp)
    rows = []
    try:
        for level in levels:
            rows.append(run_level(url, level, roles, args.calls_per_slot))
    finally:
        for role in reversed(roles):
            for p in role.processes:
                stop_process(p)
        shutil.rmtree(tmp, ignore_errors=True)
    data = {"levels": rows, "workers": args.workers, "cpus": os.cpu_count(), "max_calls_per_worker": max_calls}
    write_result("capacity", data)
    text = markdown(data)
    print(text)
    if not args.no_docs:
        plot(data)
        update_doc_section("capacity", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
