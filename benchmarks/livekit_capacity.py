"""Capacity through LiveKit SIP: concurrent SIP calls into the real LiveKit SIP and LiveKit server,
answered by the workers in ``call-…`` rooms, with per-second CPU of every role; and, on the same
stack at the same levels, the Twilio Media Streams path, for a worker's CPU per call of each.

Starts Redis, the real LiveKit server and LiveKit SIP, the cloud-engine emulators (Deepgram,
ElevenLabs; the architecture document's configuration), one orchestrator and N workers. Per
level: SIP callers (PJSIP phones, G.711 µ-law, spread over caller processes of four: PJSIP's
limit per process, ``switchboard.loadtest.sip_load``), staggered over the ramp, each
placing ``--calls-per-slot`` calls of ``--turns`` known-end clips; then the load generator's
Twilio callers at the same level (``capacity.run_level``). CPU of every role is sampled every
second (``capacity.Sampler``); means and peaks are over the steady state (≥ 90 % of callers on a
call). Latency is read on the wire at each phone's RTP port (``rtp_tap``) from the clip's known
end of speech, as ``livekit_latency.py`` does. Writes ``benchmarks/results/livekit_capacity.json``
and a section of ``docs/performance.md``.

    .venv/bin/python benchmarks/livekit_capacity.py [--levels 10,25] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import (
    CLIPS,
    RESULTS,
    LiveKitBeside,
    Role,
    start_stack,
    stop_stack,
    summarize,
    update_doc_section,
    write_result,
)
from capacity import Sampler, lag_p99_ms, loop_lag_buckets, run_level, steady
from switchboard.loadtest.known_end import load_manifest
from switchboard.loadtest.scenario import GOODBYE_CLIP, MULTI_PHRASE_CLIPS

OUR_NUMBER = "+15550100"
CALLER_NUMBER = "+15105550100"
CONFIG = "cloud"


def sip_level(livekit: LiveKitBeside, level: int, roles: list[Role], worker_urls: list[str],
              calls_per_slot: int, turns: int) -> dict:
    """``level`` SIP callers at once, staggered over the ramp; each places its calls in turn.
    The callers are spread over processes of four (``sip_load``: PJSIP's limit per process)."""
    from switchboard.loadtest.sip_load import SipSlot, run_sip_load

    pool = [c for c in load_manifest(CLIPS) if c.source != GOODBYE_CLIP and c.source not in MULTI_PHRASE_CLIPS]
    ramp_s = max(5.0, level * 0.2)
    slots = []
    for slot in range(level):
        rng = random.Random(level * 1000 + slot)
        slots.append(SipSlot(slot * ramp_s / level, tuple(tuple(rng.sample(pool, turns)) for _ in range(calls_per_slot))))
    idle_rss = {r.name: r.rss_mb() for r in roles}
    lag_before = loop_lag_buckets(worker_urls)
    with Sampler(roles) as sampler:
        def on_active(n: int) -> None:
            sampler.active = n

        run = run_sip_load(livekit.sip_uri(OUR_NUMBER), CALLER_NUMBER, slots, on_active=on_active,
                           on_started=lambda pids: sampler.caller_pids.extend(pids))
    results = run.calls
    window = steady(sampler.samples, level)
    names = [r.name for r in roles] + ["load generator"]
    mean = {k: round(float(np.mean([x["cpu"][k] for x in window])), 1) for k in names}
    peak = {k: round(float(np.max([x["cpu"][k] for x in window])), 1) for k in names}
    peak_rss = {r.name: round(max(x["rss_mb"][r.name] for x in window), 1) for r in roles}
    active = float(np.mean([x["active"] for x in window])) or level
    answered = sum(1 for r in results if r.answered)
    wire = [t.voice_to_voice_ms for r in results for t in r.wire if t.voice_to_voice_ms is not None]
    ear = [t.voice_to_voice_ms for r in results for t in r.turns if t.voice_to_voice_ms is not None]
    failures: dict[str, int] = {}
    for r in results:
        if r.failure:
            key = r.failure.split(":")[0][:60]
            failures[key] = failures.get(key, 0) + 1
    row = {
        "path": "livekit", "concurrency": level, "calls": len(results), "answered": answered,
        "answered_rate": round(answered / len(results), 3) if results else 0.0,
        "success_rate": round(sum(1 for r in results if not r.failure) / len(results), 3) if results else 0.0,
        "failure_reasons": failures, "turns": sum(len(r.turns) for r in results),
        "caller_processes": run.processes, "caller_cpu_s": run.caller_cpu_s,
        "voice_to_voice_ms": summarize(wire), "voice_to_voice_at_ear_ms": summarize(ear),
        "steady_state_s": len(window), "mean_active_calls": round(active, 1),
        "cpu_pct_mean": mean, "cpu_pct_peak": peak,
        "worker_cpu_pct_per_call": round(mean["workers"] / active, 2),
        "rss_mb": peak_rss,
        "worker_rss_mb_per_call": round((peak_rss["workers"] - idle_rss["workers"]) / active, 2),
        "worker_loop_lag_p99_ms": lag_p99_ms(lag_before, loop_lag_buckets(worker_urls)),
        "cpu_per_second": [{"active": x["active"], "cpu": {k: round(v, 1) for k, v in x["cpu"].items()}}
                           for x in sampler.samples],
    }
    v = row["voice_to_voice_ms"]
    print(f"livekit {level} calls: answered {answered}/{len(results)}, p50 {v['p50']} p95 {v['p95']} ms; "
          f"failures {failures}; CPU mean {mean}", flush=True)
    return row


def twilio_level(url: str, level: int, roles: list[Role], worker_urls: list[str], calls_per_slot: int) -> dict:
    """The same level through the Twilio path (``capacity.run_level``), per-second CPU kept too."""
    row = run_level(url, level, roles, worker_urls, calls_per_slot, CONFIG)
    row["path"] = "twilio"
    row["voice_to_voice_ms"] = {k: row["voice_to_voice_ms"].get(k) for k in ("n", "p50", "p95", "max")}
    return row


def markdown(data: dict) -> str:
    roles = [r for r in data["roles"] if r != "workers"]
    lines = [
        "## Capacity through LiveKit SIP (`benchmarks/livekit_capacity.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {data['cpus']} cores (shared): Deepgram STT + "
        "ElevenLabs TTS + scripted responder, both providers emulated; Redis, the real LiveKit server and LiveKit "
        f"SIP, the emulators, one orchestrator, {data['workers']} workers and the callers all on this machine. "
        f"SIP callers are PJSIP phones (G.711 µ-law) in caller processes of four calls each (PJSIP's limit "
        "per process), staggered over the ramp, "
        f"{data['calls_per_slot']} calls per caller slot of {data['turns']} clips each; latency on the wire at the "
        "phone's RTP port from the clip's known end of speech. The Twilio rows are the load generator at the "
        "same level on the same stack (`capacity.py`'s level runner). CPU is % of one core (200 % = both "
        "cores), mean / peak of per-second samples over the steady state (≥ 90 % of callers on a call); "
        "\"callers\" is the caller processes and the benchmark's own, which reads their RTP off loopback.",
        "",
        "| path | calls | answered | success | p50 | p95 | max | steady s | workers CPU | per call | "
        + " | ".join(roles) + " | callers |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(roles) + "---|",
    ]
    for r in data["levels"]:
        v, m, p = r["voice_to_voice_ms"], r["cpu_pct_mean"], r["cpu_pct_peak"]
        answered = f"{r['answered']}/{r['calls']}" if "answered" in r else "–"
        lines.append(
            f"| {r['path']} {r['concurrency']} | {r['calls']} | {answered} | {r['success_rate']:.0%} | {v['p50']} "
            f"| {v['p95']} | {v['max']} | {r['steady_state_s']} | {m['workers']} / {p['workers']} % "
            f"| {r['worker_cpu_pct_per_call']} % | "
            + " | ".join(f"{m.get(role, 0)} / {p.get(role, 0)}" for role in roles)
            + f" | {m['load generator']} / {p['load generator']} |"
        )
    lines += [""]
    for level in sorted({r["concurrency"] for r in data["levels"]}):
        by_path = {r["path"]: r for r in data["levels"] if r["concurrency"] == level}
        if {"livekit", "twilio"} <= by_path.keys() and by_path["twilio"]["worker_cpu_pct_per_call"]:
            ratio = by_path["livekit"]["worker_cpu_pct_per_call"] / by_path["twilio"]["worker_cpu_pct_per_call"]
            lines.append(f"- {level} calls: a worker's CPU per LiveKit call is {ratio:.2f}× a Twilio call's "
                         f"({by_path['livekit']['worker_cpu_pct_per_call']} % vs "
                         f"{by_path['twilio']['worker_cpu_pct_per_call']} % of a core).")
    failures = {k: n for r in data["levels"] for k, n in r["failure_reasons"].items()}
    if failures:
        lines += ["", "Failure reasons: " + ", ".join(f"{k} ×{n}" for k, n in sorted(failures.items()))]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="10,25")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls-per-slot", type=int, default=1)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--twilio-levels", default=None,
                        help="levels also run through the Twilio path (default: every level; '' for none)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    from switchboard.loadtest.rtp_tap import tap_available

    if not tap_available():
        raise SystemExit("reading the SIP edge needs CAP_NET_RAW (run as root or grant the capability)")
    levels = [int(x) for x in args.levels.split(",")]
    twilio_levels = levels if args.twilio_levels is None else [int(x) for x in args.twilio_levels.split(",") if x]
    tmp = Path(tempfile.mkdtemp(prefix="sb-livekit-capacity-"))
    max_calls = -(-max(levels) // args.workers) + 2
    livekit = LiveKitBeside(tmp, [OUR_NUMBER])
    url, roles, worker_urls = start_stack(CONFIG, args.workers, max_calls, tmp, logs=RESULTS / "livekit_capacity",
                                          worker_prefix="lkcap", livekit=livekit)
    rows = []
    try:
        for level in levels:
            rows.append(sip_level(livekit, level, roles, worker_urls, args.calls_per_slot, args.turns))
            if level in twilio_levels:
                rows.append(twilio_level(url, level, roles, worker_urls, max(1, args.calls_per_slot)))
    finally:
        stop_stack(roles)
        shutil.rmtree(tmp, ignore_errors=True)
    data = {"config": CONFIG, "levels": rows, "workers": args.workers, "cpus": os.cpu_count(),
            "max_calls_per_worker": max_calls, "calls_per_slot": args.calls_per_slot, "turns": args.turns,
            "roles": [r.name for r in roles]}
    write_result("livekit_capacity", data)
    text = markdown(data)
    print(text)
    if not args.no_docs:
        update_doc_section("livekit_capacity", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
