"""Capacity sweep: how many concurrent calls one 2-core machine holds, per configuration.

Configurations (``--config``): ``cloud`` — the architecture document's: Deepgram STT +
ElevenLabs TTS + scripted conversation logic, both providers emulated at published latency;
``cloud-llm`` — the same with the OpenAI-compatible LLM responder (emulated); ``offline`` —
Whisper + Piper + scripted, no provider at all. Starts Redis, the emulators the configuration
needs, one orchestrator and N workers, then runs the load generator at rising concurrency with
staggered callers over the known-end clips (``benchmarks/clips``). Per level it reports
p50/p95/p99 voice-to-voice latency, success and failure reasons, and per process role the CPU
sampled every second (mean and peak over the level's steady state, when ≥ 90 % of its callers
are on a call), RSS, threads, and the workers' event-loop lag. The load generator runs in this
process. Writes ``benchmarks/results/capacity-<config>.json``, ``docs/img/capacity-<config>.png``
and a section of ``docs/performance.md``. ``--noise-suppression`` runs the agent with RNNoise on the
caller's audio (its CPU then counts in the workers'), writing ``capacity-<config>-noise``.
``--media-stage graph,lean --repeat N`` compares where the caller's audio is handled
(``SWITCHBOARD_MEDIA_STAGE``), alternating fresh stacks, into ``capacity-<config>-media-stage``.

    .venv/bin/python benchmarks/capacity.py --config cloud [--levels 10,25,50,75,100] [--workers 2] [--noise-suppression]
    .venv/bin/python benchmarks/capacity.py --config cloud --levels 25 --media-stage graph,lean --repeat 2
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import (
    CLIPS,
    CONFIGS,
    IMG,
    RESULTS,
    TEST_AGENT,
    Role,
    proc_cpu_s,
    scrape_metrics,
    start_stack,
    stop_stack,
    update_doc_section,
    write_result,
)
from switchboard.loadtest.html_report import summarize
from switchboard.loadtest.loadgen import LoadTestConfig, Progress, run_load_test
from switchboard.loadtest.scenario import ScenarioOptions


class Sampler:
    """Every second: each role's CPU (% of a core), RSS and threads, the load generator's too,
    and how many callers were on a call."""

    def __init__(self, roles: list[Role]):
        self._roles = roles
        self._self = os.getpid()
        self.samples: list[dict] = []
        self.active = 0
        # Caller processes beside this one (SIP callers, four calls each): counted as the load
        # generator too, each at its last reading once it has exited.
        self.caller_pids: list[int] = []
        self._caller_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _cpu(self) -> dict[str, float]:
        cpu = {r.name: r.cpu_seconds() for r in self._roles}
        for pid in list(self.caller_pids):
            self._caller_cpu[pid] = max(self._caller_cpu.get(pid, 0.0), proc_cpu_s(pid))
        cpu["load generator"] = proc_cpu_s(self._self) + sum(self._caller_cpu.values())
        return cpu

    def _run(self) -> None:
        last, t_last = self._cpu(), time.monotonic()
        while not self._stop.wait(1.0):
            now, t = self._cpu(), time.monotonic()
            dt = t - t_last
            self.samples.append({
                "t": t, "active": self.active,
                "cpu": {k: 100 * (now[k] - last[k]) / dt for k in now},
                "rss_mb": {r.name: r.rss_mb() for r in self._roles},
                "threads": {r.name: r.threads() for r in self._roles},
            })
            last, t_last = now, t


_BUCKET = re.compile(r'^event_loop_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)


def loop_lag_buckets(worker_urls: list[str]) -> dict[float, float]:
    """Cumulative event-loop lag histogram summed over the workers."""
    total: dict[float, float] = {}
    for url in worker_urls:
        if (text := scrape_metrics(url)) is None:
            continue
        for le, count in _BUCKET.findall(text):
            total[float(le)] = total.get(float(le), 0.0) + float(count)
    return total


def lag_p99_ms(before: dict[float, float], after: dict[float, float]) -> float | None:
    """p99 of the lag observed between two scrapes, as the upper edge of its bucket."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not delta or delta[-1][1] <= 0:
        return None
    n = delta[-1][1]
    return next((1000 * le for le, c in delta if c >= 0.99 * n), None)


def steady(samples: list[dict], level: int) -> list[dict]:
    """Seconds when at least 90 % of the level's callers were on a call (all seconds if none)."""
    full = [s for s in samples if s["active"] >= 0.9 * level]
    return full or samples


def run_level(url: str, level: int, roles: list[Role], worker_urls: list[str], calls_per_slot: int,
              config: str) -> dict:
    out = RESULTS / "capacity" / f"{config}-{level}"
    load = LoadTestConfig(url=url, concurrency=level, calls=level * calls_per_slot, ramp_up_s=max(5.0, level * 0.2),
                          seed=level, record_fraction=0.0, max_recordings=0, out_dir=out,
                          # Emulated Deepgram hears its own transcripts, not the clips: no scripted
                          # goodbye there, so the caller hangs up after the last reply.
                          scenario=ScenarioOptions(speech_dir=CLIPS, goodbye=config == "offline"))
    idle_rss = {r.name: r.rss_mb() for r in roles}
    lag_before = loop_lag_buckets(worker_urls)
    with Sampler(roles) as sampler:
        def progress(p: Progress) -> None:
            sampler.active = p.active

        run = run_load_test(load, on_progress=progress)
    s = summarize(run)
    window = steady(sampler.samples, level)
    roles_all = [r.name for r in roles] + ["load generator"]
    mean = {k: round(float(np.mean([x["cpu"][k] for x in window])), 1) for k in roles_all}
    peak = {k: round(float(np.max([x["cpu"][k] for x in window])), 1) for k in roles_all}
    peak_rss = {r.name: round(max(x["rss_mb"][r.name] for x in window), 1) for r in roles}
    active = float(np.mean([x["active"] for x in window])) or level
    row = {
        "config": config,
        "concurrency": level,
        "steady_state_s": len(window),
        "mean_active_calls": round(active, 1),
        "calls": s.calls,
        "success_rate": s.success_rate,
        "failure_reasons": s.failure_reasons,
        "voice_to_voice_ms": s.voice_to_voice_ms.model_dump(),
        "cpu_pct_mean": mean,
        "cpu_pct_peak": peak,
        "worker_cpu_pct_per_call": round(mean["workers"] / active, 2),
        "rss_mb": peak_rss,
        "worker_rss_mb_per_call": round((peak_rss["workers"] - idle_rss["workers"]) / active, 2),
        "threads_max": {r.name: max(x["threads"][r.name] for x in window) for r in roles},
        "worker_loop_lag_p99_ms": lag_p99_ms(lag_before, loop_lag_buckets(worker_urls)),
        "loadgen_cpu_per_call_pct": s.cpu_per_call_pct,
        "max_clock_lag_ms": s.max_clock_lag_ms,
    }
    v = row["voice_to_voice_ms"]
    print(f"{config} {level} calls: success {s.success_rate:.0%} p50 {v['p50']} p95 {v['p95']} p99 {v['p99']} ms; "
          f"failures {s.failure_reasons}; CPU mean {mean} peak {peak}; threads {row['threads_max']}; "
          f"lag p99 {row['worker_loop_lag_p99_ms']} ms", flush=True)
    return row


def markdown(data: dict) -> str:
    config = data["config"]
    what = {"cloud": "Deepgram STT + ElevenLabs TTS + scripted responder, both providers emulated at published latency",
            "cloud-llm": "Deepgram STT + ElevenLabs TTS + LLM responder, all emulated at published latency",
            "offline": "Whisper tiny.en + Piper + scripted responder, no provider"}[config]
    lines = [
        f"## Capacity: {config} (`benchmarks/capacity.py --config {config}`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {data['cpus']} cores: {what}; Redis, "
        f"{'the emulators, ' if config != 'offline' else ''}one orchestrator, {data['workers']} worker processes and the "
        f"load generator all on this machine. Callers staggered over the ramp, {data['calls_per_slot']} calls per caller "
        "slot; CPU sampled every second per process role over the steady state (≥ 90 % of callers on a call). "
        "Latency from where the caller's speech ends (known-end clips).",
        "",
        "| calls | steady s | success | p50 | p95 | p99 | workers CPU mean / peak | per call | worker RSS / call | threads (workers) | loop lag p99 | orchestrator | Redis | emulators | load gen |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["levels"]:
        v, m, p = r["voice_to_voice_ms"], r["cpu_pct_mean"], r["cpu_pct_peak"]
        lines.append(
            f"| {r['concurrency']} | {r['steady_state_s']} | {r['success_rate']:.0%} | {v['p50']} | {v['p95']} | {v['p99']} "
            f"| {m['workers']} / {p['workers']} % | {r['worker_cpu_pct_per_call']} % | {r['worker_rss_mb_per_call']} MB "
            f"| {r['threads_max']['workers']} | {r['worker_loop_lag_p99_ms']} ms "
            f"| {m['orchestrator']} / {p['orchestrator']} % | {m['redis']} / {p['redis']} % "
            f"| {m['emulators']} / {p['emulators']} % | {m['load generator']} / {p['load generator']} % |"
        )
    failures = {k: n for r in data["levels"] for k, n in r["failure_reasons"].items()}
    if failures:
        lines += ["", "Failure reasons: " + ", ".join(f"{k} ×{n}" for k, n in sorted(failures.items()))]
    lines += ["", "CPU is % of one core (200 % = both cores), mean / peak of per-second samples; latency in ms.",
              "", f"![capacity sweep, {config}](img/{_name(data)}.png)"]
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
    ax1.set_title(data["config"])
    ax1.legend()
    for role in ("workers", "orchestrator", "redis", "emulators", "load generator"):
        line, = ax2.plot(levels, [r["cpu_pct_mean"][role] for r in data["levels"]], marker="o", label=f"{role} mean")
        ax2.plot(levels, [r["cpu_pct_peak"][role] for r in data["levels"]], linestyle=":", color=line.get_color())
    ax2.axhline(200, color="grey", linestyle=":", label="2 cores")
    ax2.set_xlabel("concurrent calls")
    ax2.set_ylabel("CPU (% of one core), mean and peak (dotted)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / f"{_name(data)}.png", dpi=110)


def _name(data: dict) -> str:
    """capacity-<config>, with -noise when the agent ran noise suppression, -lean on the media stage."""
    return (f"capacity-{data['config']}" + ("-noise" if data.get("noise_suppression") else "")
            + ("-lean" if data.get("media_stage") == "lean" else ""))


def compare_media_stages(args: argparse.Namespace, levels: list[int], stages: list[str]) -> int:
    """Each media stage on a fresh stack of its own, one after the other, ``--repeat`` rounds: the
    variants share the machine's conditions as closely as a shared machine allows. Writes
    ``capacity-<config>-media-stage.json`` (every run, and the medians); no docs section."""
    max_calls = -(-max(levels) // args.workers) + 2
    runs = []
    for round_ in range(args.repeat):
        for stage in stages:
            tmp = Path(tempfile.mkdtemp(prefix="sb-capacity-"))
            url, roles, worker_urls = start_stack(
                args.config, args.workers, max_calls, tmp, logs=RESULTS / "capacity",
                env_all={"SWITCHBOARD_MEDIA_STAGE": stage})
            try:
                for level in levels:
                    row = run_level(url, level, roles, worker_urls, args.calls_per_slot, args.config)
                    runs.append({"media_stage": stage, "round": round_, **row})
            finally:
                stop_stack(roles)
                shutil.rmtree(tmp, ignore_errors=True)
    medians = {}
    for stage in stages:
        for level in levels:
            mine = [r for r in runs if r["media_stage"] == stage and r["concurrency"] == level]
            medians[f"{stage}-{level}"] = {
                "runs": len(mine),
                "worker_cpu_pct_per_call": float(np.median([r["worker_cpu_pct_per_call"] for r in mine])),
                "workers_cpu_pct_mean": float(np.median([r["cpu_pct_mean"]["workers"] for r in mine])),
                "p50_ms": float(np.median([r["voice_to_voice_ms"]["p50"] for r in mine])),
                "p95_ms": float(np.median([r["voice_to_voice_ms"]["p95"] for r in mine])),
                "success_rate": float(np.median([r["success_rate"] for r in mine])),
                "loop_lag_p99_ms": float(np.median([r["worker_loop_lag_p99_ms"] or 0 for r in mine])),
            }
    data = {"config": args.config, "workers": args.workers, "cpus": os.cpu_count(), "repeat": args.repeat,
            "calls_per_slot": args.calls_per_slot, "runs": runs, "medians": medians}
    write_result(f"capacity-{args.config}-media-stage", data)
    for key, m in medians.items():
        print(f"{key}: {m}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cloud")
    parser.add_argument("--levels", default="10,25,50,75,100")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls-per-slot", type=int, default=2)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--noise-suppression", action="store_true",
                        help="the agent with RNNoise on the caller's audio (agent YAML noise_suppression)")
    parser.add_argument("--media-stage", default=None,
                        help="the workers' SWITCHBOARD_MEDIA_STAGE (graph|lean); a list (graph,lean) "
                             "compares them: a fresh stack per variant, alternating, --repeat times")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of a --media-stage comparison")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    stages = args.media_stage.split(",") if args.media_stage else []
    if len(stages) > 1 or args.repeat > 1:
        return compare_media_stages(args, levels, stages or ["graph"])
    tmp = Path(tempfile.mkdtemp(prefix="sb-capacity-"))
    max_calls = -(-max(levels) // args.workers) + 2
    agent = TEST_AGENT
    if args.noise_suppression:
        agent = tmp / "agent.yaml"
        agent.write_text(TEST_AGENT.read_text() + "noise_suppression: {enabled: true}\n")
    env_all = {"SWITCHBOARD_MEDIA_STAGE": stages[0]} if stages else None
    url, roles, worker_urls = start_stack(args.config, args.workers, max_calls, tmp, logs=RESULTS / "capacity",
                                          agent=agent, env_all=env_all)
    rows = []
    try:
        for level in levels:
            rows.append(run_level(url, level, roles, worker_urls, args.calls_per_slot, args.config))
    finally:
        stop_stack(roles)
        shutil.rmtree(tmp, ignore_errors=True)
    data = {"config": args.config, "noise_suppression": args.noise_suppression, "levels": rows, "workers": args.workers, "cpus": os.cpu_count(),
            "max_calls_per_worker": max_calls, "calls_per_slot": args.calls_per_slot,
            "media_stage": stages[0] if stages else None}
    write_result(_name(data), data)
    text = markdown(data)
    print(text)
    if not args.no_docs:
        plot(data)
        update_doc_section(_name(data), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
