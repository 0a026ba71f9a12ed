"""Soak: calls back to back at a fixed concurrency for half an hour; does anything grow?

Starts the ``cloud`` stack (emulated Deepgram + ElevenLabs, scripted responder; see
``_common.start_stack``) with 2 workers and runs the load generator in this process: each of the
``--concurrency`` caller slots places a new call as soon as its last one ends, for ``--minutes``.
Every ``--interval`` seconds it samples each process (orchestrator, each worker, each emulator,
Redis, the load generator) from /proc: RSS, threads, open file descriptors and CPU over the
interval, and scrapes each worker's /metrics for ``event_loop_tasks`` (unfinished asyncio tasks),
``active_calls`` and the event-loop lag histogram. The same is sampled idle, before the load and
after it ends. Reports calls, success, voice-to-voice p50/p95 per window, and per process RSS at
the end of warm-up vs the end (growth %, slope after warm-up from a linear fit), and tasks,
threads and fds at warm-up end vs end. Writes ``benchmarks/results/soak.json``,
``docs/img/soak.png`` and the "Soak" section of ``docs/performance.md``.

Idle samples also list each process's fds by kind and its OS threads by name. ``--memwatch N``
runs the workers under ``_memwatch.py`` (live objects, tasks and threads by type every N s; it
pauses them, so use it to find a leak, not to measure); ``--from-json`` redraws plot and docs.

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/soak.py [--minutes 30] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
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
    describe_fds,
    proc_cpu_s,
    proc_fds,
    proc_rss_bytes,
    proc_threads,
    scrape_metrics,
    start_stack,
    stop_stack,
    summarize,
    thread_names,
    update_doc_section,
    write_result,
)
from switchboard.loadtest.html_report import summarize as summarize_run
from switchboard.loadtest.loadgen import LoadTestConfig, LoadTestRun, Progress, run_load_test
from switchboard.loadtest.scenario import ScenarioOptions

LOAD_GENERATOR = "load generator"
# The goals: RSS growth after warm-up, and no growth in tasks, threads or fds.
RSS_GROWTH_GOAL_PCT = 5.0
_GAUGE = re.compile(r"^(event_loop_tasks|active_calls) ([0-9.e+-]+)$", re.M)
_LAG_BUCKET = re.compile(r'^event_loop_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _scrape(url: str) -> dict:
    """A worker's tasks and active calls gauges and its cumulative loop-lag buckets."""
    if (text := scrape_metrics(url)) is None:
        return {}
    out: dict = {name: float(v) for name, v in _GAUGE.findall(text)}
    out["lag_buckets"] = {le: float(c) for le, c in _LAG_BUCKET.findall(text)}
    return out


class SoakSampler:
    """Every ``interval_s``: per process RSS (MB), threads, fds and CPU (% of a core over the
    interval); per worker its tasks and active calls; how many callers were on a call."""

    def __init__(self, processes: dict[str, int], worker_urls: dict[str, str], interval_s: float):
        self._pids = processes
        self._worker_urls = worker_urls
        self._interval = interval_s
        self.samples: list[dict] = []
        self.active = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak-sampler")

    def __enter__(self) -> SoakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def snapshot(self) -> dict:
        """One sample now, without CPU (which needs an interval)."""
        sample: dict = {"mono": time.monotonic(), "active": self.active, "load_1m": os.getloadavg()[0], "procs": {}}
        for label, pid in self._pids.items():
            sample["procs"][label] = {"rss_mb": round(proc_rss_bytes(pid) / 1e6, 2), "threads": proc_threads(pid),
                                      "fds": proc_fds(pid)}
        for label, url in self._worker_urls.items():
            scraped = _scrape(url)
            sample["procs"][label]["tasks"] = scraped.get("event_loop_tasks")
            sample["procs"][label]["active_calls"] = scraped.get("active_calls")
            sample["procs"][label]["lag_buckets"] = scraped.get("lag_buckets", {})
        return sample

    def _cpu(self) -> dict[str, float]:
        return {label: proc_cpu_s(pid) for label, pid in self._pids.items()}

    def _run(self) -> None:
        last, t_last = self._cpu(), time.monotonic()
        while not self._stop.wait(self._interval):
            now, t = self._cpu(), time.monotonic()
            sample = self.snapshot()
            for label in self._pids:
                sample["procs"][label]["cpu_pct"] = round(100 * (now[label] - last[label]) / (t - t_last), 1)
            self.samples.append(sample)
            last, t_last = now, t


def _lag_p99_ms(before: dict[str, float], after: dict[str, float]) -> float | None:
    """p99 of the loop lag observed between two cumulative scrapes (upper edge of its bucket)."""
    delta = sorted((float(le), after[le] - before.get(le, 0.0)) for le in after)
    if not delta or delta[-1][1] <= 0:
        return None
    n = delta[-1][1]
    return next((1000 * le for le, c in delta if c >= 0.99 * n), None)


def _turn_times(run: LoadTestRun) -> list[tuple[float, float]]:
    """(seconds into the run when the caller stopped speaking, voice-to-voice ms) of every turn."""
    return [(c.offset_s + t.caller_speech_end_s, t.voice_to_voice_ms)
            for c in run.calls for t in c.result.turns if t.voice_to_voice_ms is not None]


def windows(run: LoadTestRun, samples: list[dict], workers: list[str], minutes: float, window_min: float) -> list[dict]:
    """Per window of the run: calls started and their success, latency, and the workers' loop lag."""
    turns = _turn_times(run)
    rows = []
    n = max(1, round(minutes / window_min))
    for i in range(n):
        a, b = i * window_min * 60, (i + 1) * window_min * 60
        calls = [c for c in run.calls if a <= c.offset_s < b]
        in_window = [s for s in samples if a < s["t"] <= b]
        lag = {}
        if len(in_window) >= 2:
            for w in workers:
                lag[w] = _lag_p99_ms(in_window[0]["procs"][w]["lag_buckets"], in_window[-1]["procs"][w]["lag_buckets"])
        rows.append({
            "from_min": round(a / 60, 2), "to_min": round(b / 60, 2),
            "calls_started": len(calls),
            "success_rate": round(sum(c.verdict.success for c in calls) / len(calls), 4) if calls else None,
            "voice_to_voice_ms": summarize([v for t, v in turns if a <= t < b]),
            "worker_loop_lag_p99_ms": lag,
        })
    return rows


def _median_at(samples: list[dict], label: str, key: str, a: float, b: float) -> float | None:
    values = [s["procs"][label].get(key) for s in samples if a < s["t"] <= b]
    values = [v for v in values if v is not None]
    return round(float(np.median(values)), 2) if values else None


def growth(samples: list[dict], label: str, warmup_s: float, end_s: float, settle_s: float) -> dict:
    """One process after warm-up: RSS (median of the last ``settle_s`` of warm-up vs of the run),
    growth %, slope; tasks, threads and fds at warm-up end, at the end, max and slope."""
    after = [s for s in samples if warmup_s < s["t"] <= end_s]  # not the tail, when the last calls end
    out: dict = {}
    for key in ("rss_mb", "tasks", "threads", "fds"):
        at_warmup = _median_at(samples, label, key, warmup_s - settle_s, warmup_s)
        at_end = _median_at(samples, label, key, end_s - settle_s, end_s)
        points = [(s["t"], s["procs"][label].get(key)) for s in after if s["procs"][label].get(key) is not None]
        if at_warmup is None or at_end is None or len(points) < 2:
            continue
        t, v = np.asarray(points, dtype=float).T
        row = {"warmup_end": at_warmup, "end": at_end, "max_after_warmup": round(float(v.max()), 2),
               "slope_per_min": round(float(np.polyfit(t / 60, v, 1)[0]), 4)}
        at_load = _slope_at_fixed_load(after, label, key)
        if at_load is not None:
            row["slope_per_min_at_fixed_load"] = at_load
        if key == "rss_mb":
            row["growth_pct"] = round(100 * (at_end - at_warmup) / at_warmup, 2)
        out[key] = row
    return out


def _slope_at_fixed_load(samples: list[dict], label: str, key: str) -> float | None:
    """A worker's growth per minute with its number of live calls held fixed: the time
    coefficient of a least-squares fit ``value ~ 1 + active_calls + minutes`` (what each call
    holds while it runs is not growth; what stays behind is)."""
    rows = [(s["procs"][label].get(key), s["procs"][label].get("active_calls"), s["t"] / 60) for s in samples]
    rows = [r for r in rows if None not in r]
    if len(rows) < 4:
        return None
    y, calls, minutes = np.asarray(rows, dtype=float).T
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(calls), calls, minutes]), y, rcond=None)
    return round(float(coef[2]), 4)


def _per_window_max(samples: list[dict], label: str, key: str, a: float, b: float) -> float | None:
    values = [s["procs"][label].get(key) for s in samples if a < s["t"] <= b]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def verdicts(data: dict) -> dict:
    """Each goal per process: RSS growth ≤ 5 %; tasks, threads, fds not growing (the last
    window's maximum no higher than the first window's after warm-up: both windows held the
    same load, and their maxima are when every caller was on a call)."""
    out = {}
    first, last = data["first_window_after_warmup_s"], data["last_window_s"]
    for label, g in data["growth"].items():
        v: dict = {}
        if label == LOAD_GENERATOR:
            continue  # it keeps every call's record in memory until the report: growth by design
        if "rss_mb" in g:
            v["rss"] = g["rss_mb"]["growth_pct"] <= RSS_GROWTH_GOAL_PCT
        for key in ("tasks", "threads", "fds"):
            if key not in g:
                continue
            m0 = _per_window_max(data["samples"], label, key, *first)
            m1 = _per_window_max(data["samples"], label, key, *last)
            v[key] = {"first_window_max": m0, "last_window_max": m1, "met": m1 <= m0}
        out[label] = v
    return out


def run_soak(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="sb-soak-"))
    max_calls = -(-args.concurrency // args.workers) + 2
    logs = RESULTS / "soak"
    command = None
    if args.memwatch:
        for old in logs.glob("memwatch-worker*.jsonl"):
            old.unlink()

        def command(i: int, cli_args: list[str]) -> list[str]:
            return [sys.executable, str(Path(__file__).with_name("_memwatch.py")), "--every", str(args.memwatch),
                    "--out", str(logs / f"memwatch-worker{i}.jsonl"), *(["--tracemalloc"] if args.tracemalloc else []),
                    "--", *cli_args]
    url, roles, worker_urls = start_stack(args.config, args.workers, max_calls, tmp, logs=logs,
                                          worker_prefix="soak", worker_command=command)
    processes = {label: p.pid for r in roles for label, p in zip(r.labels, r.processes, strict=True)}
    processes[LOAD_GENERATOR] = os.getpid()
    workers = dict(zip(roles[-1].labels, worker_urls, strict=True))
    duration_s = args.minutes * 60
    load = LoadTestConfig(url=url, concurrency=args.concurrency, duration_s=duration_s, ramp_up_s=5.0, seed=14,
                          record_fraction=0.0, max_recordings=0, out_dir=RESULTS / "soak" / "run",
                          # Emulated Deepgram hears its own transcripts, not the clips: no scripted
                          # goodbye there, so the caller hangs up after the last reply.
                          scenario=ScenarioOptions(speech_dir=CLIPS, goodbye=args.config == "offline"))
    try:
        sampler = SoakSampler(processes, workers, args.interval)
        idle_before = sampler.snapshot()
        idle_before["fd_kinds"] = describe_fds(processes)
        idle_before["thread_names"] = thread_names(processes)
        last_print = [0.0]
        t0 = []  # when the load generator's clock started (its call offsets count from there)

        def progress(p: Progress) -> None:
            if not t0:
                t0.append(time.monotonic() - p.elapsed_s)
            sampler.active = p.active
            if p.elapsed_s - last_print[0] >= 60:
                last_print[0] = p.elapsed_s
                s = sampler.samples[-1] if sampler.samples else {"procs": {}}
                state = {w: (s["procs"].get(w, {}).get("rss_mb"), s["procs"].get(w, {}).get("tasks"),
                             s["procs"].get(w, {}).get("fds")) for w in workers}
                print(f"{p.elapsed_s / 60:5.1f} min: {p.done} calls, {p.failed} failed, {p.active} on a call, "
                      f"p50 {p.p50_ms and round(p.p50_ms)} p95 {p.p95_ms and round(p.p95_ms)} ms; "
                      f"workers (RSS MB, tasks, fds) {state}", flush=True)

        with sampler:
            run = run_load_test(load, on_progress=progress, progress_interval_s=1.0)
        # Calls have ended; let the workers finish their post-call work before the idle sample.
        time.sleep(args.settle)
        idle_after = sampler.snapshot()
        idle_after["fd_kinds"] = describe_fds(processes)
        idle_after["thread_names"] = thread_names(processes)
    finally:
        stop_stack(roles)
        shutil.rmtree(tmp, ignore_errors=True)
    s = summarize_run(run)
    for x in [idle_before, idle_after, *sampler.samples]:
        x["t"] = round(x.pop("mono") - t0[0], 1)
    samples = [x for x in sampler.samples if x["t"] > 0]
    warmup_s, window_s = args.warmup_minutes * 60, args.window_minutes * 60
    end_s = min(samples[-1]["t"], duration_s) if samples else duration_s
    settle_s = min(60.0, window_s)
    data = {
        "command": "PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/soak.py " + " ".join(args.argv),
        "commit": args.commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": {"before": args.load_before, "after": [round(x, 2) for x in os.getloadavg()],
                         "during_1m": summarize([x["load_1m"] for x in sampler.samples])},
        "config": args.config, "workers": args.workers, "concurrency": args.concurrency,
        "max_calls_per_worker": max_calls, "minutes": args.minutes, "warmup_minutes": args.warmup_minutes,
        "window_minutes": args.window_minutes, "interval_s": args.interval,
        "calls": s.calls, "succeeded": s.succeeded, "success_rate": s.success_rate,
        "failure_reasons": s.failure_reasons, "turns": s.turns,
        "voice_to_voice_ms": s.voice_to_voice_ms.model_dump(), "mean_concurrency": s.mean_concurrency,
        "windows": windows(run, samples, list(workers), args.minutes, args.window_minutes),
        "growth": {label: growth(samples, label, warmup_s, end_s, settle_s) for label in processes},
        "idle": {"before": _strip(idle_before), "after": _strip(idle_after), "settle_s": args.settle},
        "cpu_pct_mean": {label: round(float(np.mean([x["procs"][label]["cpu_pct"] for x in samples
                                                     if warmup_s < x["t"] <= end_s] or [0])), 1)
                         for label in processes},
        "first_window_after_warmup_s": [warmup_s, warmup_s + window_s],
        "last_window_s": [end_s - window_s, end_s],
        "samples": [_strip(x) for x in samples],
    }
    data["goals"] = verdicts(data)
    return data


def _strip(sample: dict) -> dict:
    """A sample without the lag histograms (they are only needed for the per-window lag)."""
    return {**sample, "procs": {k: {m: v for m, v in p.items() if m != "lag_buckets"}
                                for k, p in sample["procs"].items()}}


def _mark(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**not met**")


def _span(growth_row: dict, key: str) -> str:
    x = growth_row.get(key)
    return "—" if x is None else f"{x['warmup_end']:g} → {x['end']:g} (max {x['max_after_warmup']:g})"


def _verdict(data: dict) -> str:
    """One sentence: which goals were met, and the workers' RSS slope per live call."""
    unmet = [f"{label} {goal}" for label, goals in data["goals"].items() for goal, v in goals.items()
             if not (v if isinstance(v, bool) else v["met"])]
    workers = [w for w in data["growth"] if w.startswith("worker")]
    per_call = []
    for w in workers:
        up = [s["procs"][w].get("active_calls") for s in data["samples"]
              if data["warmup_minutes"] * 60 < s["t"] <= data["minutes"] * 60]
        up = [x for x in up if x is not None]
        if up and np.mean(up) > 0:
            per_call.append(data["growth"][w]["rss_mb"]["slope_per_min"] / float(np.mean(up)))
    text = ("**Every goal met**" if not unmet else "**Not met: " + ", ".join(unmet) + "**") + " after warm-up."
    if per_call:
        text += (f" Worker RSS grew {min(per_call):.3f}–{max(per_call):.3f} MB/min per live call after warm-up "
                 "(pipecat#3750 reports ~1 MB/min per session).")
    return text


def markdown(data: dict) -> str:
    v = data["voice_to_voice_ms"]
    la = data["load_average"]
    lines = [
        "## Soak (`benchmarks/soak.py`)",
        "",
        f"`{data['command']}` — commit `{data['commit']}`, {data['date']}, {data['machine']}; load average "
        f"(1/5/15 min) {la['before']} before and {la['after']} after"
        + (f"; 1-minute load during the run: median {la['during_1m']['p50']}, max {la['during_1m']['max']}"
           + (f", {la['during_note']}" if la.get("during_note") else "")
           if la.get("during_1m") else "")
        + ". Other developers ran tests on this machine at the same time. "
        f"Configuration `{data['config']}` (emulated Deepgram + ElevenLabs, scripted responder), one orchestrator "
        f"(the media edge), {data['workers']} workers; {data['concurrency']} caller slots placing calls back to back "
        f"for {data['minutes']} min (mean {data['mean_concurrency']} calls up). Every {data['interval_s']:.0f} s, "
        "per process: RSS, threads and open fds from /proc, and each worker's `event_loop_tasks` from /metrics. "
        f"Warm-up: the first {data['warmup_minutes']:g} min; \"warm-up end\" and \"end\" are medians over the last "
        "minute of each.",
        "",
        f"**{data['calls']} calls, {data['success_rate']:.1%} successful** ({data['turns']} turns; voice-to-voice "
        f"p50 {v['p50']} / p95 {v['p95']} / p99 {v['p99']} ms)"
        + (f"; failures: {', '.join(f'{k} ×{n}' for k, n in data['failure_reasons'].items())}."
           if data["failure_reasons"] else "."),
        "",
        "| window (min) | calls started | success | p50 ms | p95 ms | worker loop lag p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for w in data["windows"]:
        lat = w["voice_to_voice_ms"]
        lag = ", ".join(f"{x}" for x in w["worker_loop_lag_p99_ms"].values())
        rate = "—" if w["success_rate"] is None else f"{w['success_rate']:.1%}"
        lines.append(f"| {w['from_min']:g}–{w['to_min']:g} | {w['calls_started']} | {rate} | {lat['p50']} "
                     f"| {lat['p95']} | {lag} |")
    lines += [
        "",
        "| process | RSS warm-up end → end MB | growth | slope MB/min | tasks | threads | fds | CPU mean | goals |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, g in data["growth"].items():
        goals = data["goals"].get(label)
        rss = g.get("rss_mb")
        if rss is None:
            continue
        met = ["not a goal: it keeps every call's record"] if goals is None else (
            [f"RSS {_mark(goals.get('rss'))}"]
            + [f"{k} {_mark(goals[k]['met'])}" for k in ("tasks", "threads", "fds") if k in goals])
        lines.append(f"| {label} | {rss['warmup_end']:g} → {rss['end']:g} | {rss['growth_pct']:+.1f} % "
                     f"| {rss['slope_per_min']:+.3f} | {_span(g, 'tasks')} | {_span(g, 'threads')} | {_span(g, 'fds')} "
                     f"| {data['cpu_pct_mean'][label]} % | {', '.join(met)} |")
    before, after = data["idle"]["before"]["procs"], data["idle"]["after"]["procs"]
    lines += ["", f"Workers with their live calls held fixed (least-squares time coefficient of value ~ 1 + "
              f"active_calls + minutes, after warm-up), and idle before the load vs {data['idle']['settle_s']:g} s "
              "after it:", "",
              "| worker | RSS MB/min at fixed load | tasks/min at fixed load | fds/min at fixed load "
              "| idle RSS MB | idle tasks | idle threads | idle fds |",
              "|---|---|---|---|---|---|---|---|"]
    for w, g in data["growth"].items():
        if not w.startswith("worker"):
            continue
        fixed = [g.get(k, {}).get("slope_per_min_at_fixed_load") for k in ("rss_mb", "tasks", "fds")]
        b, a = before[w], after[w]
        lines.append(f"| {w} | {fixed[0]:+.3f} | {fixed[1]:+.3f} | {fixed[2]:+.3f} | {b['rss_mb']:g} → {a['rss_mb']:g} "
                     f"| {b.get('tasks'):g} → {a.get('tasks'):g} | {b['threads']} → {a['threads']} "
                     f"| {b['fds']} → {a['fds']} |")
    kinds_before, kinds_after = data["idle"]["before"].get("fd_kinds"), data["idle"]["after"].get("fd_kinds")
    if kinds_before and kinds_after:
        changed = []
        for label in kinds_after:
            b, a = kinds_before.get(label, {}), kinds_after[label]
            diff = [f"{k} {b.get(k, 0)} → {a.get(k, 0)}" for k in sorted(set(a) | set(b)) if a.get(k, 0) != b.get(k, 0)]
            if diff:
                changed.append(f"{label}: {', '.join(diff)}")
        lines += ["", "Idle fds that differ before and after the load, by kind: " + ("; ".join(changed) or "none") + "."]
    lines += ["", _verdict(data)]
    lines += [x for note in data.get("notes", []) for x in ("", note)]
    lines += ["", "Goals (issue 14): RSS growth ≤ 5 % after warm-up; tasks, threads and fds not growing — the last "
              f"{data['window_minutes']:g}-minute window's maximum no higher than the first window's after warm-up "
              "(both at the same load; the maximum is when every caller is on a call). CPU is % of one core, mean "
              "after warm-up.", "", "![soak: RSS, tasks, fds and threads per worker; latency per window](img/soak.png)"]
    return "\n".join(lines)


def plot(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = data["samples"]
    t = [s["t"] / 60 for s in samples]
    workers = [k for k in data["growth"] if k.startswith("worker")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    panels = [("rss_mb", "RSS (MB)"), ("tasks", "asyncio tasks"), ("fds", "open file descriptors"),
              ("threads", "threads")]
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for w in workers:
            ax.plot(t, [s["procs"][w].get(key) for s in samples], label=w)
        if key == "rss_mb":
            ax.plot(t, [s["procs"]["orchestrator"][key] for s in samples], label="orchestrator")
        ax.axvline(data["warmup_minutes"], color="grey", linestyle=":", label="end of warm-up")
        ax.set_title(title)
        ax.set_xlabel("minutes")
        ax.legend(fontsize=8)
    ax = axes.flat[4]
    ax.plot(t, [s["active"] for s in samples], label="callers on a call")
    for w in workers:
        ax.plot(t, [s["procs"][w].get("active_calls") for s in samples], label=f"{w} active_calls", alpha=0.7)
    if "load_1m" in samples[0]:
        ax.plot(t, [s["load_1m"] for s in samples], color="grey", linestyle=":", label="machine load (1 min)")
    ax.set_title("calls up; machine load")
    ax.set_xlabel("minutes")
    ax.legend(fontsize=8)
    ax = axes.flat[5]
    mids = [(w["from_min"] + w["to_min"]) / 2 for w in data["windows"]]
    for q in ("p50", "p95"):
        ax.plot(mids, [w["voice_to_voice_ms"][q] for w in data["windows"]], marker="o", label=q)
    ax.axhline(600, color="red", linestyle="--", label="target p95 600 ms")
    ax.set_title(f"voice-to-voice per {data['window_minutes']:g}-min window")
    ax.set_xlabel("minutes")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.suptitle(f"soak: {data['concurrency']} callers back to back, {data['minutes']} min, "
                 f"{data['workers']} workers ({data['config']}), commit {data['commit']}")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "soak.png", dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cloud")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup-minutes", type=float, help="default 5, at most a third of the run")
    parser.add_argument("--window-minutes", type=float, help="latency windows; default 5, at most a third of the run")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the load before the idle sample")
    parser.add_argument("--name", default="soak", help="results file name (benchmarks/results/<name>.json)")
    parser.add_argument("--no-docs", action="store_true", help="no plot and no docs section")
    parser.add_argument("--from-json", type=Path, help="no run: redraw the plot and docs from a results file")
    parser.add_argument("--memwatch", type=float, metavar="SECONDS",
                        help="workers log live objects and tasks by type this often "
                             "(benchmarks/results/soak/memwatch-worker*.jsonl); slows them")
    parser.add_argument("--tracemalloc", action="store_true", help="with --memwatch: also the lines whose "
                        "allocations grew most")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.warmup_minutes = args.warmup_minutes or min(5.0, args.minutes / 3)
    args.window_minutes = args.window_minutes or min(5.0, args.minutes / 3)
    args.load_before = [round(x, 2) for x in os.getloadavg()]
    args.commit = _git_commit()  # now: the tree may be committed to while the soak runs
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        data["goals"] = verdicts(data)
    else:
        data = run_soak(args)
        write_result(args.name, data)
    text = markdown(data)
    print(text)
    if not args.no_docs:
        plot(data)
        update_doc_section("soak", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
