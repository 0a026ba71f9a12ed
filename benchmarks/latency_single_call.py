"""Single-call voice-to-voice latency from where the caller's speech really ends, with the stage
breakdown, barge-in stop times, false barge-ins on line noise and the instrument check.

Starts a standalone agent (offline engines) per variant unless ``--url`` is given, and places
calls with the caller simulator over the known-end clips in ``benchmarks/clips`` (their
``speech_end_s`` is a fact of the file, not a detector's guess). Variants (``--variant
name:ENV=VALUE,...``) run side by side, call by call, so a noisy machine hits them alike. The
agent's own stage timings come from ``GET /calls/{sid}``. Before any of it, every instrument is
checked against the fake agent's known delay. Writes
``benchmarks/results/latency_single_call.json`` and a section of ``docs/performance.md``.

    .venv/bin/python benchmarks/latency_single_call.py [--calls 4] [--variant vad100:SWITCHBOARD_VAD_START_SECS=0.1]
    .venv/bin/python benchmarks/latency_single_call.py --name latency_media_stage --skip-instruments \
        --variant graph:SWITCHBOARD_MEDIA_STAGE=graph --variant lean:SWITCHBOARD_MEDIA_STAGE=lean
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from pathlib import Path

import httpx
import numpy as np

from _common import (
    REPO,
    RESULTS,
    TEST_AGENT,
    cli,
    free_port,
    start_process,
    stop_process,
    summarize,
    update_doc_section,
    write_result,
)
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.known_end import load_manifest
from switchboard.loadtest.line_noise import write_line_noises
from switchboard.loadtest.scenario import GOODBYE_CLIP, MULTI_PHRASE_CLIPS
from switchboard.loadtest.validation import validate_calls, validate_loadtest

CLIPS_DIR = REPO / "benchmarks" / "clips"
NOISE_DIR = RESULTS / "noise_clips"
API_KEY = "benchmark-key"
STAGES = ("vad_stop_ms", "transcript_ms", "turn_end_ms", "first_tts_audio_ms", "bot_started_ms")


def turn_clips(clips_dir: Path = CLIPS_DIR) -> list[Path]:
    return [c.path for c in load_manifest(clips_dir)
            if c.source != GOODBYE_CLIP and c.source not in MULTI_PHRASE_CLIPS]


def goodbye_clip(clips_dir: Path = CLIPS_DIR) -> Path:
    return next(c.path for c in load_manifest(clips_dir) if c.source == GOODBYE_CLIP)


def latency_script(clips: list[Path]) -> CallScript:
    turns = [CallerTurn(audio=p) for p in clips]
    turns.append(CallerTurn(audio=goodbye_clip(clips[0].parent), hangup_expected=True))
    return CallScript(turns=turns)


def barge_in_script(clips: list[Path]) -> CallScript:
    # Talk over the greeting and over each reply, 700 ms after it became audible.
    return CallScript(turns=[CallerTurn(audio=p, barge_in_after_ms=700) for p in clips])


def noise_script(noise: Path) -> CallScript:
    return CallScript(turns=[CallerTurn(audio=noise, barge_in_after_ms=600)], reply_timeout_ms=2500)


async def agent_turns(client: httpx.AsyncClient, base_url: str, call_sid: str) -> list[dict]:
    response = await client.get(f"{base_url}/calls/{call_sid}", headers={"X-API-Key": API_KEY})
    return response.json().get("turns", []) if response.status_code == 200 else []


async def measure(urls: dict[str, str], rounds: int, clips_dirs: dict[str, Path]) -> dict:
    """Every variant's calls, round by round; a variant in ``clips_dirs`` speaks those clips."""
    pools = {v: turn_clips(clips_dirs.get(v, CLIPS_DIR)) for v in urls}
    noises = write_line_noises(NOISE_DIR)
    per_call = -(-len(next(iter(pools.values()))) // rounds)
    data: dict = {v: {"rows": [], "barge_ins": [], "noise": [], "failures": []} for v in urls}
    async with httpx.AsyncClient(timeout=10) as client:
        for i in range(rounds):
            for variant, url in urls.items():
                pool = pools[variant]
                chosen = pool[i * per_call : (i + 1) * per_call] or pool[:per_call]
                out = data[variant]
                result = await run_call(url, latency_script(chosen), transcribe=True, http_client=client)
                if result.outcome not in ("completed", "agent_hung_up"):
                    out["failures"].append(f"{result.call_sid}: {result.outcome} {result.reason}")
                inside = await agent_turns(client, url, result.call_sid)
                paired = len(inside) == len(result.turns)
                for k, turn in enumerate(result.turns):
                    row = {"clip": Path(turn.clip).name, "voice_to_voice_ms": turn.voice_to_voice_ms,
                           "agent_said": turn.transcript, "failure": turn.failure}
                    if paired:
                        row.update({s: inside[k].get(s) for s in STAGES})
                    out["rows"].append(row)
                barge = await run_call(url, barge_in_script(chosen[:2]), transcribe=False, http_client=client)
                out["barge_ins"] += [t.agent_stopped_ms for t in barge.turns
                                     if t.agent_talking_at_barge_in and t.agent_stopped_ms is not None]
                for name, noise in noises.items():
                    heard = await run_call(url, noise_script(noise), transcribe=False, http_client=client)
                    greeting = heard.greeting
                    out["noise"].append({"noise": name, "clears": len(heard.clear_times_s),
                                         "greeting_s": greeting.duration_s if greeting else None})
    return data


def summarize_variant(out: dict) -> dict:
    rows = out["rows"]
    v2v = [r["voice_to_voice_ms"] for r in rows if r["voice_to_voice_ms"] is not None]
    staged = [r for r in rows if r.get("bot_started_ms") is not None and r["voice_to_voice_ms"] is not None]
    return {
        "voice_to_voice_ms": summarize(v2v),
        "stages_ms": {s: summarize([r[s] for r in staged if r.get(s) is not None]) for s in STAGES},
        "output_edge_ms": summarize([r["voice_to_voice_ms"] - r["bot_started_ms"] for r in staged]),
        "barge_in_stop_ms": summarize(out["barge_ins"]),
        "false_barge_ins": sum(1 for n in out["noise"] if n["clears"]),
        "noise_calls": len(out["noise"]),
    }


async def instruments(out_dir: Path) -> list[dict]:
    clips = [c for c in load_manifest(CLIPS_DIR) if c.source in {
        "pocketsphinx_cards_003_16k.wav", "osr_us_0010_s02_8k.wav", "cmu_arctic_aew_a0003_16k.wav"}]
    configs = [(300, 0), (500, 0), (800, 0), (300, 20), (500, 20), (800, 20)]
    readings = await validate_calls(configs, clips, out_dir)
    readings += await asyncio.to_thread(validate_loadtest, 500, 20, CLIPS_DIR, calls=4, out_dir=out_dir)
    table: dict[tuple, list[float]] = {}
    for r in readings:
        table.setdefault((r.instrument, r.delay_ms, r.jitter_ms), []).append(
            r.error_ms if r.error_ms is not None else float("nan"))
    return [{"instrument": k[0], "delay_ms": k[1], "jitter_ms": k[2], "turns": len(v),
             "mean_error_ms": round(float(np.mean(v)), 1), "max_abs_error_ms": round(float(np.max(np.abs(v))), 1)}
            for k, v in table.items()]


def report(data: dict) -> str:
    lines = [
        "## Single call, offline engines (`benchmarks/latency_single_call.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {data['cpus']} cores "
        f"(a shared machine: other work was running). Voice-to-voice is measured black-box by the "
        "caller simulator **from where the caller's speech signal ends** (known-end clips, "
        "`benchmarks/clips/known_end.tsv`) to the first audible sample of the agent's reply, "
        "as Twilio would deliver and play it.",
        "",
        "| variant | turns | p50 | p95 | max | barge-in stop p50 / p95 | false barge-ins on noise |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, s in data["summary"].items():
        v, b = s["voice_to_voice_ms"], s["barge_in_stop_ms"]
        lines.append(f"| {variant} | {v['n']} | {v['p50']} ms | {v['p95']} ms | {v['max']} ms | "
                     f"{b['p50']} / {b['p95']} ms (n={b['n']}) | {s['false_barge_ins']} of {s['noise_calls']} |")
    first = next(iter(data["summary"].values()))
    st, edge = first["stages_ms"], first["output_edge_ms"]
    lines += [
        "",
        f"Where the time goes ({next(iter(data['summary']))}; the agent's own clock, ms after the caller's "
        "speech energy ended as its gate saw it; p50 / p95):",
        "",
        "| stage | p50 | p95 |",
        "|---|---|---|",
        f"| VAD reports the stop (energy gate + `stop_secs`) | {st['vad_stop_ms']['p50']} | {st['vad_stop_ms']['p95']} |",
        f"| transcript ready (speculative Whisper tiny.en) | {st['transcript_ms']['p50']} | {st['transcript_ms']['p95']} |",
        f"| turn ends (transcript check; smart-turn beside it) | {st['turn_end_ms']['p50']} | {st['turn_end_ms']['p95']} |",
        f"| first TTS audio (Piper, sentence cache) | {st['first_tts_audio_ms']['p50']} | {st['first_tts_audio_ms']['p95']} |",
        f"| bot starts speaking (output transport) | {st['bot_started_ms']['p50']} | {st['bot_started_ms']['p95']} |",
        f"| → caller hears it (input windowing, network, playout) | +{edge['p50']} | +{edge['p95']} |",
        "",
        "Instrument check (each against the fake agent's known delay, `tests/test_instruments.py`):",
        "",
        "| instrument | delay | jitter | turns | mean error | max abs error |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['instrument']} | {r['delay_ms']:.0f} ms | ±{r['jitter_ms']:.0f} ms | {r['turns']} | "
              f"{r['mean_error_ms']} ms | {r['max_abs_error_ms']} ms |" for r in data["instruments"]]
    for variant, out in data["variants"].items():
        if out["failures"]:
            lines += ["", f"Failures ({variant}): " + "; ".join(out["failures"])]
    return "\n".join(lines)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return name, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="measure a running agent instead of starting one")
    parser.add_argument("--calls", type=int, default=4, help="rounds: calls per variant")
    parser.add_argument("--variant", action="append", default=[], help="name:ENV=VALUE,... (repeatable)")
    parser.add_argument("--baseline-clips", type=Path, default=None,
                        help="also run a 'baseline-clips' variant (default settings) that speaks the "
                             "known-end clips in this folder, call by call beside the others: "
                             "a before/after of a change to the clips")
    parser.add_argument("--name", default="latency_single_call",
                        help="results file (benchmarks/results/<name>.json); the docs section is "
                             "updated only under the default name")
    parser.add_argument("--skip-instruments", action="store_true",
                        help="no instrument check (a comparison of variants run right after one)")
    args = parser.parse_args()
    variants = dict(parse_variant(v) for v in args.variant) or {"default": {}}
    clips_dirs: dict[str, Path] = {}
    if args.baseline_clips:
        variants["baseline-clips"] = {}
        clips_dirs["baseline-clips"] = args.baseline_clips
    processes, urls = [], {}
    try:
        if args.url:
            urls = {"given": args.url}
        else:
            for name, env in variants.items():
                port = free_port()
                urls[name] = f"http://127.0.0.1:{port}"
                processes.append(start_process(
                    cli("serve", "--port", str(port), "--agent", str(TEST_AGENT)), f"{urls[name]}/health",
                    RESULTS / f"latency_single_call_{name}.log",
                    env={"SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_LOG_LEVEL": "WARNING", **env}))
        measured = asyncio.run(measure(urls, args.calls, clips_dirs))
    finally:
        for process in processes:
            stop_process(process)
    data = {"calls": args.calls, "cpus": os.cpu_count(), "variants": measured,
            "variant_env": variants, "variant_clips": {v: str(d) for v, d in clips_dirs.items()},
            "summary": {v: summarize_variant(out) for v, out in measured.items()},
            "instruments": [] if args.skip_instruments else asyncio.run(instruments(RESULTS / "instrument_check"))}
    markdown = report(data)
    path = write_result(args.name, data)
    if args.name == "latency_single_call":
        update_doc_section("latency_single_call", markdown)
    print(markdown)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
