"""Overload: offered load at 1×, 2× and 4× the measured capacity, admitted by headroom.

Same stack and instruments as ``benchmarks/capacity.py`` (the load generator over the known-end
clips, CPU per role every second), with ``SWITCHBOARD_ADMISSION=headroom`` and the default
ceiling, so nobody tunes a slot count; the agent's overflow is a hold queue (``--max-wait``
seconds, then busy) and the Twilio REST emulator moves held callers onto their streams. The
measured capacity is the largest level of ``benchmarks/results/capacity-<config>.json`` with
p95 < 600 ms and ≥ 99 % success (``--capacity`` overrides it).

Per level it reports what admitted calls got (p95 voice-to-voice, success, and calls admitted
then failed: the goal is none), what every other call got (connected after holding, busy after
the maximum wait, refused), hold waits and whether held callers were connected in arrival order,
and the peak of calls connected at once (the goal: within 15 % of the capacity at 1×). Writes
``benchmarks/results/overload-<config>.json`` and a section of ``docs/performance.md``;
``--smoke`` writes ``overload-smoke-<config>.json`` and a section labelled as a smoke run (a
check that it runs, on small levels; not a measurement).

    nice .venv/bin/python benchmarks/overload.py --config cloud [--multiples 1,2,4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import yaml

from _common import (
    CLIPS,
    CONFIGS,
    IMG,
    RESULTS,
    TEST_AGENT,
    free_port,
    start_process,
    start_stack,
    stop_process,
    stop_stack,
    update_doc_section,
    write_result,
)
from capacity import Sampler, steady
from switchboard.loadtest.html_report import summarize
from switchboard.loadtest.loadgen import CallRecord, LoadTestConfig, Progress, run_load_test
from switchboard.loadtest.report import CallOutcome
from switchboard.loadtest.scenario import ScenarioOptions

ACCOUNT_SID = "AC" + "9" * 32
AUTH_TOKEN = "overload-bench-token"
CEILING = 32  # the default max_calls: a safety net, not a tuned slot count


class HeadroomWatch:
    """Every second, each worker's headroom from ``/stats``: how long it was open, and closed
    for which reason (worker-seconds)."""

    def __init__(self, url: str):
        self._url = f"{url}/stats"
        self.states: Counter[str] = Counter()
        self.agent_p95_ms: list[float] = []  # each worker's own turn p95, each second: what admission sees
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HeadroomWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                workers = httpx.get(self._url, timeout=2).json()["workers"]
            except (httpx.HTTPError, ValueError, KeyError):
                continue
            for w in workers:
                headroom = w.get("headroom") or {}
                self.states["open" if headroom.get("open") else headroom.get("closed_reason") or "unknown"] += 1
                if headroom.get("p95_ms") is not None:
                    self.agent_p95_ms.append(float(headroom["p95_ms"]))


def measured_capacity(config: str) -> int:
    data = json.loads((RESULTS / f"capacity-{config}.json").read_text())
    good = [r["concurrency"] for r in data["levels"]
            if (r["success_rate"] or 0) >= 0.99 and (r["voice_to_voice_ms"]["p95"] or 1e9) < 600]
    if not good:
        raise SystemExit(f"capacity-{config}.json has no level with p95 < 600 ms and 99 % success: give --capacity")
    return max(good)


def overflow_agent(tmp: Path, max_wait: float) -> Path:
    """The test agent, with a hold queue for the calls the pool cannot admit."""
    agent = yaml.safe_load(TEST_AGENT.read_text())
    agent["overflow"] = {"action": "queue", "max_wait_secs": max_wait, "announce_position": True,
                         "then": {"action": "busy"}}
    path = tmp / "overload-agent.yaml"
    path.write_text(yaml.safe_dump(agent, sort_keys=False))
    return path


def classify(record: CallRecord) -> str:
    """What a call got: admitted (at once), held_connected, held_busy, refused, or failed."""
    result = record.result
    if result.hold is not None:
        return "held_connected" if result.hold.connected else "held_busy"
    if result.stream_sid is not None:
        return "admitted"
    return "refused" if result.outcome is CallOutcome.REJECTED else "failed"


# Callers placed in one pass of the queue see their REST update on their own 0.1 s polls: within
# this of each other they were connected together, whatever order the simulator saw.
_TOGETHER_S = 0.25


def arrival_order_kept(records: list[CallRecord]) -> tuple[int, int]:
    """Held callers connected before one who arrived earlier, over held callers connected."""
    held = [r for r in records if r.result.hold is not None and r.result.hold.connected]
    by_arrival = sorted(held, key=lambda r: r.offset_s + r.result.hold.queued_at_s)
    connected = [r.offset_s + r.result.hold.left_at_s for r in by_arrival]
    inversions = sum(
        1 for i, later in enumerate(connected) if any(later < earlier - _TOGETHER_S for earlier in connected[:i])
    )
    return inversions, len(held)


def peak_connected(records: list[CallRecord]) -> int:
    """Most calls on a stream with an agent at once (from each call's connect to its end)."""
    events = []
    for r in records:
        if r.result.stream_sid is None:
            continue
        start = r.offset_s + (r.result.hold.left_at_s if r.result.hold and r.result.hold.left_at_s else 0.0)
        events += [(start, 1), (r.offset_s + r.result.duration_s, -1)]
    level = peak = 0
    for _t, step in sorted(events):
        level += step
        peak = max(peak, level)
    return peak


def run_level(url: str, twilio: str, capacity: int, multiple: int, roles, calls_per_slot: int, config: str,
              max_wait: float) -> dict:
    level = capacity * multiple
    out = RESULTS / "overload" / f"{config}-{multiple}x"
    load = LoadTestConfig(url=url, concurrency=level, calls=level * calls_per_slot, ramp_up_s=max(5.0, level * 0.2),
                          seed=level, record_fraction=0.0, max_recordings=0, out_dir=out, auth_token=AUTH_TOKEN,
                          twilio_api=twilio, max_call_s=max_wait + 300,
                          scenario=ScenarioOptions(speech_dir=CLIPS, goodbye=config == "offline"))
    with Sampler(roles) as sampler, HeadroomWatch(url) as watch:
        def progress(p: Progress) -> None:
            sampler.active = p.active

        run = run_load_test(load, on_progress=progress)
    kinds = [classify(c) for c in run.calls]
    connected = [c for c, k in zip(run.calls, kinds, strict=True) if k in ("admitted", "held_connected")]
    admitted_run = run.model_copy(update={"calls": connected})
    s = summarize(admitted_run) if connected else None
    waits = [c.result.hold.left_at_s - c.result.hold.queued_at_s for c in run.calls
             if c.result.hold is not None and c.result.hold.left_at_s is not None]
    inversions, held = arrival_order_kept(run.calls)
    window = steady(sampler.samples, level)
    row = {
        "config": config,
        "multiple": multiple,
        "offered": level,
        "calls": len(run.calls),
        "got": {k: kinds.count(k) for k in ("admitted", "held_connected", "held_busy", "refused", "failed")},
        "admitted_success_rate": s.success_rate if s else None,
        "admitted_then_failed": sum(1 for c in connected if not c.verdict.success),
        "admitted_failure_reasons": s.failure_reasons if s else {},
        "admitted_voice_to_voice_ms": s.voice_to_voice_ms.model_dump() if s else None,
        "peak_connected": peak_connected(run.calls),
        "hold_wait_s": {"count": len(waits), "p50": _pct(waits, 50), "p95": _pct(waits, 95),
                        "max": round(max(waits), 1) if waits else None},
        "held_out_of_order": inversions,
        "worker_seconds_open_or_closed_by": dict(watch.states.most_common()),
        "agent_side_p95_ms_median": _pct(watch.agent_p95_ms, 50),
        "held_connected": held,
        "workers_cpu_pct_mean": round(float(np.mean([x["cpu"]["workers"] for x in window])), 1) if window else None,
        "max_clock_lag_ms": s.max_clock_lag_ms if s else None,
    }
    v = row["admitted_voice_to_voice_ms"] or {}
    print(f"{config} {multiple}x ({level} callers): got {row['got']}; admitted success {row['admitted_success_rate']} "
          f"p95 {v.get('p95')} ms; admitted then failed {row['admitted_then_failed']}; peak connected "
          f"{row['peak_connected']}; hold wait {row['hold_wait_s']}; out of order {inversions}/{held}; "
          f"headroom {row['worker_seconds_open_or_closed_by']}", flush=True)
    return row


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def markdown(data: dict) -> str:
    config = data["config"]
    smoke = data.get("smoke")
    title = f"## Overload: {config} (`benchmarks/overload.py --config {config}`)"
    lines = [
        title + (" — SMOKE RUN, not a measurement" if smoke else ""),
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {data['cpus']} cores, {data['workers']} "
        f"worker processes admitting by headroom (objective p95 < 600 ms, ceiling {CEILING}, no slot count tuned); "
        f"capacity {data['capacity']} calls (from the capacity sweep); overflow: hold queue, "
        f"{data['max_wait_secs']:.0f} s maximum wait, then busy.",
        "",
        "| offered | calls | admitted | held → connected | held → busy | refused | failed | admitted success | "
        "admitted then failed | admitted p95 | agent-side p95 | peak connected | hold wait p50 / p95 / max | "
        "held out of order | worker-seconds open / closed by |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["levels"]:
        g, v, w = r["got"], r["admitted_voice_to_voice_ms"] or {}, r["hold_wait_s"]
        rate = f"{r['admitted_success_rate']:.0%}" if r["admitted_success_rate"] is not None else "–"
        lines.append(
            f"| {r['multiple']}× ({r['offered']}) | {r['calls']} | {g['admitted']} | {g['held_connected']} | "
            f"{g['held_busy']} | {g['refused']} | {g['failed']} | {rate} | {r['admitted_then_failed']} | "
            f"{v.get('p95')} | {r.get('agent_side_p95_ms_median', '–')} | {r['peak_connected']} | {w['p50']} / {w['p95']} / {w['max']} s | "
            f"{r['held_out_of_order']} of {r['held_connected']} | "
            + ", ".join(f"{k} {n}" for k, n in r["worker_seconds_open_or_closed_by"].items()) + " |"
        )
    if smoke:
        lines += ["", "This is a smoke run on a shared, busy machine with small levels: it shows the benchmark "
                  "runs end to end, not what Switchboard holds. The real run needs a quiet machine."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cloud")
    parser.add_argument("--capacity", type=int, help="calls the pool holds (default: from the capacity sweep)")
    parser.add_argument("--multiples", default="1,2,4")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls-per-slot", type=int, default=2)
    parser.add_argument("--max-wait", type=float, default=60.0, help="the hold queue's maximum wait (s)")
    parser.add_argument("--smoke", action="store_true", help="a check that it runs: results labelled as a smoke run")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    capacity = args.capacity or measured_capacity(args.config)
    multiples = [int(x) for x in args.multiples.split(",")]
    name = f"overload-smoke-{args.config}" if args.smoke else f"overload-{args.config}"
    tmp = Path(tempfile.mkdtemp(prefix="sb-overload-"))
    logs = RESULTS / "overload"
    port = free_port()
    twilio_url = f"http://127.0.0.1:{port}"
    twilio = start_process(
        [sys.executable, "-m", "switchboard.emulators", "twilio", "--port", str(port),
         "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN], f"{twilio_url}/health", logs / "twilio.log")
    env = {
        "SWITCHBOARD_ADMISSION": "headroom",
        "SWITCHBOARD_AGENT_CONFIG": str(overflow_agent(tmp, args.max_wait)),
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "SWITCHBOARD_TWILIO_API_URL": twilio_url,
    }
    rows = []
    try:
        url, roles, _worker_urls = start_stack(args.config, args.workers, CEILING, tmp, logs=logs, env_all=env)
        try:
            for multiple in multiples:
                rows.append(run_level(url, twilio_url, capacity, multiple, roles, args.calls_per_slot, args.config,
                                      args.max_wait))
        finally:
            stop_stack(roles)
    finally:
        stop_process(twilio)
        shutil.rmtree(tmp, ignore_errors=True)
    data = {"config": args.config, "smoke": args.smoke, "capacity": capacity, "levels": rows,
            "workers": args.workers, "cpus": os.cpu_count(), "max_wait_secs": args.max_wait,
            "calls_per_slot": args.calls_per_slot, "ceiling": CEILING}
    write_result(name, data)
    text = markdown(data)
    print(text)
    if not args.no_docs:
        plot(data, name)
        update_doc_section(name, text + f"\n\n![overload, {args.config}](img/{name}.png)")
    return 0


def plot(data: dict, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['multiple']}×" for r in data["levels"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    bottom = np.zeros(len(labels))
    for kind in ("admitted", "held_connected", "held_busy", "refused", "failed"):
        values = np.array([r["got"][kind] for r in data["levels"]])
        ax1.bar(labels, values, bottom=bottom, label=kind.replace("_", " → "))
        bottom += values
    ax1.set_ylabel("calls")
    ax1.set_title(f"{data['config']}: what every call got")
    ax1.legend(fontsize=8)
    ax2.plot(labels, [(r["admitted_voice_to_voice_ms"] or {}).get("p95") for r in data["levels"]], marker="o",
             label="admitted p95")
    ax2.axhline(600, color="red", linestyle="--", label="objective 600 ms")
    ax2.set_ylabel("voice-to-voice (ms)")
    ax2.legend()
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / f"{name}.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
