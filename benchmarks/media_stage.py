"""Where the caller's audio is handled, graph or lean (``SWITCHBOARD_MEDIA_STAGE``): worker CPU per call.

One standalone agent per variant (``switchboard serve``, cloud engines: Deepgram + ElevenLabs +
scripted, both emulated at published latency, shared by the two), each loaded in turn by the same
batch of concurrent callers (same seed: the same clips in the same order), alternating which goes
first, ``--rounds`` times. Per batch: the agent process's CPU seconds (user + system, all its
threads, from /proc) divided by the batch's call-seconds, i.e. % of a core per concurrent call,
and the callers' voice-to-voice latency. CPU seconds consumed are what a call costs whatever else
the machine runs; latency is not (a shared machine stretches it for both variants alike).
Writes ``benchmarks/results/media_stage.json``.

    .venv/bin/python benchmarks/media_stage.py [--calls 10] [--rounds 2] [--input-frame-ms 40] [--name media_stage]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import (
    CLIPS,
    CONFIGS,
    RESULTS,
    SECRETS,
    TEST_AGENT,
    TRANSCRIPTS,
    cli,
    free_port,
    proc_cpu_s,
    start_process,
    stop_process,
    write_result,
)
from switchboard.loadtest.html_report import summarize
from switchboard.loadtest.loadgen import LoadTestConfig, run_load_test
from switchboard.loadtest.scenario import ScenarioOptions

VARIANTS = ("graph", "lean")


def batch(url: str, pid: int, calls: int, seed: int, out: Path) -> dict:
    load = LoadTestConfig(url=url, concurrency=calls, calls=calls, ramp_up_s=5.0, seed=seed,
                          record_fraction=0.0, max_recordings=0, out_dir=out,
                          scenario=ScenarioOptions(speech_dir=CLIPS, goodbye=False))
    cpu_before, t0 = proc_cpu_s(pid), time.monotonic()
    run = run_load_test(load)
    cpu_s, wall_s = proc_cpu_s(pid) - cpu_before, time.monotonic() - t0
    call_s = sum(r.result.duration_s for r in run.calls)
    s = summarize(run)
    return {
        "calls": s.calls, "success_rate": s.success_rate, "failure_reasons": s.failure_reasons,
        "voice_to_voice_ms": s.voice_to_voice_ms.model_dump(), "cpu_s": round(cpu_s, 2),
        "wall_s": round(wall_s, 1), "call_s": round(call_s, 1),
        "cpu_pct_per_call": round(100 * cpu_s / call_s, 2) if call_s else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="concurrent callers per batch")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--input-frame-ms", type=int, default=40,
                        help="SWITCHBOARD_INPUT_FRAME_MS (40 as in the capacity sweeps; 20 is the default)")
    parser.add_argument("--name", default="media_stage", help="results file name")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sb-media-stage-"))
    logs = RESULTS / "media_stage"
    transcripts = tmp / "transcripts.txt"
    transcripts.write_text("\n".join(TRANSCRIPTS * 20) + "\n")
    processes, urls = [], {}
    try:
        for provider in ("deepgram", "elevenlabs"):
            port = free_port()
            urls[provider] = f"http://127.0.0.1:{port}"
            extra = ["--transcripts", str(transcripts)] if provider == "deepgram" else []
            processes.append(start_process(cli("emulate", provider, "--port", str(port), *extra),
                                           f"{urls[provider]}/health", logs / f"{provider}.log"))
        agents = {}
        for variant in VARIANTS:
            port = free_port()
            env = {**SECRETS, **CONFIGS["cloud"], "SWITCHBOARD_MEDIA_STAGE": variant,
                   "SWITCHBOARD_DEEPGRAM_URL": urls["deepgram"].replace("http://", "ws://"),
                   "SWITCHBOARD_ELEVENLABS_URL": urls["elevenlabs"].replace("http://", "ws://"),
                   "SWITCHBOARD_LOG_LEVEL": "WARNING", "SWITCHBOARD_INFERENCE_THREADS": "1",
                   "SWITCHBOARD_INPUT_FRAME_MS": str(args.input_frame_ms), "SWITCHBOARD_MAX_CALLS": str(args.calls + 2),
                   "SWITCHBOARD_ADMISSION": "slots", "SWITCHBOARD_API_KEY": "benchmark-key"}
            process = start_process(cli("serve", "--port", str(port), "--agent", str(TEST_AGENT)),
                                    f"http://127.0.0.1:{port}/health", logs / f"agent-{variant}.log", env)
            processes.append(process)
            agents[variant] = (f"http://127.0.0.1:{port}", process.pid)
        runs = []
        for round_ in range(args.rounds):
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                url, pid = agents[variant]
                row = {"variant": variant, "round": round_,
                       **batch(url, pid, args.calls, round_, tmp / f"{variant}-{round_}")}
                runs.append(row)
                v = row["voice_to_voice_ms"]
                print(f"{variant} round {round_}: {row['cpu_pct_per_call']} % of a core per call "
                      f"({row['cpu_s']} CPU s over {row['call_s']} call-s), success {row['success_rate']:.0%}, "
                      f"p50 {v['p50']} p95 {v['p95']} ms, failures {row['failure_reasons']}", flush=True)
    finally:
        for process in reversed(processes):
            stop_process(process)
    medians = {
        variant: {
            "cpu_pct_per_call": float(np.median([r["cpu_pct_per_call"] for r in runs if r["variant"] == variant])),
            "p50_ms": float(np.median([r["voice_to_voice_ms"]["p50"] for r in runs if r["variant"] == variant])),
            "p95_ms": float(np.median([r["voice_to_voice_ms"]["p95"] for r in runs if r["variant"] == variant])),
        }
        for variant in VARIANTS
    }
    write_result(args.name, {"calls": args.calls, "rounds": args.rounds, "cpus": os.cpu_count(),
                             "input_frame_ms": args.input_frame_ms,
                             "runs": runs, "medians": medians})
    print(medians)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
