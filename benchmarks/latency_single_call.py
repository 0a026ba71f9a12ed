"""Single-call voice-to-voice latency, measured from the caller's side, with the stage breakdown.

Starts a standalone agent (offline engines) unless ``--url`` is given, places calls with the
caller simulator over the real speech clips, and reads the agent's own stage timings from
``GET /calls/{sid}`` to show where the time goes. Writes
``benchmarks/results/latency_single_call.json`` and a table in ``docs/performance.md``.

    .venv/bin/python benchmarks/latency_single_call.py [--calls 3] [--url http://127.0.0.1:8080]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import platform
import time
from pathlib import Path

import httpx

from _common import (
    RESULTS,
    SHARED,
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

AGENT = TEST_AGENT
GOODBYE_CLIP = "fw_stereo_right_16k.wav"  # the test agent's goodbye intent: ends the call
# Clips with pauses longer than the VAD's stop time inside them: the agent (rightly, by its
# settings) takes the first phrase as a turn, so "end of the clip" is not the end of a turn.
MULTI_PHRASE = {"pocketsphinx_cards_005_16k.wav", "ljspeech_LJ050-0131_22k.wav",
                "speech_recognition_one_two_three_44k.wav", "jfk_inaugural_16k.wav"}
STAGES = ("vad_stop_ms", "transcript_ms", "turn_end_ms", "first_tts_audio_ms", "bot_started_ms")


def clips() -> list[Path]:
    speech = SHARED / "data" / "speech"
    with open(speech / "manifest.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [speech / r["file"] for r in rows if r["file"] != GOODBYE_CLIP and r["file"] not in MULTI_PHRASE]


def scripts(n_calls: int) -> list[CallScript]:
    pool = clips()
    per_call = -(-len(pool) // n_calls)
    out = []
    for i in range(n_calls):
        chosen = pool[i * per_call : (i + 1) * per_call] or pool[:per_call]
        turns = [CallerTurn(audio=p) for p in chosen]
        turns.append(CallerTurn(audio=SHARED / "data" / "speech" / GOODBYE_CLIP, hangup_expected=True))
        out.append(CallScript(turns=turns))
    return out


async def measure(base_url: str, n_calls: int) -> dict:
    rows, failures = [], []
    async with httpx.AsyncClient(timeout=10) as client:
        for script in scripts(n_calls):
            result = await run_call(base_url, script, transcribe=True, http_client=client,
                                    record_path=RESULTS / f"latency_single_call_{len(rows)}.wav")
            if result.outcome not in ("completed", "agent_hung_up"):
                failures.append(f"{result.call_sid}: {result.outcome} {result.reason}")
            inside = (await client.get(f"{base_url}/calls/{result.call_sid}")).json().get("turns", [])
            paired = len(inside) == len(result.turns)  # VAD may split one clip into two turns
            for i, turn in enumerate(result.turns):
                row = {
                    "clip": Path(turn.clip).name,
                    "voice_to_voice_ms": turn.voice_to_voice_ms,
                    "agent_said": turn.transcript,
                    "failure": turn.failure,
                    "heard": inside[i]["transcript"] if paired else None,
                }
                if paired:
                    row.update({s: inside[i].get(s) for s in STAGES})
                rows.append(row)
    return {"rows": rows, "failures": failures}


def report(data: dict) -> str:
    rows = data["rows"]
    v2v = [r["voice_to_voice_ms"] for r in rows if r["voice_to_voice_ms"] is not None]
    staged = [r for r in rows if r.get("bot_started_ms") is not None and r["voice_to_voice_ms"] is not None]
    stages = {s: summarize([r[s] for r in staged if r.get(s) is not None]) for s in STAGES}
    edge = summarize([r["voice_to_voice_ms"] - r["bot_started_ms"] for r in staged])
    overall = summarize(v2v)
    data["summary"] = {"voice_to_voice_ms": overall, "stages_ms": stages, "output_edge_ms": edge}
    lines = [
        "## Single call, offline engines (`benchmarks/latency_single_call.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {data['cpus']} cores; "
        f"{overall['n']} turns over {data['calls']} calls of real speech clips, black-box from the caller simulator.",
        "",
        "| voice-to-voice (caller's end of speech → first audible agent audio) | p50 | p95 | mean | max |",
        "|---|---|---|---|---|",
        f"| all turns | {overall['p50']} ms | {overall['p95']} ms | {overall['mean']} ms | {overall['max']} ms |",
        "",
        "Where the time goes (agent-side, ms after the caller's end of speech as VAD places it; medians and p95):",
        "",
        "| stage | p50 | p95 |",
        "|---|---|---|",
        f"| VAD reports the caller stopped (`stop_secs`) | {stages['vad_stop_ms']['p50']} | {stages['vad_stop_ms']['p95']} |",
        f"| transcript ready (Whisper tiny.en, short window) | {stages['transcript_ms']['p50']} | {stages['transcript_ms']['p95']} |",
        f"| turn ends (smart-turn v3.2 + transcript check) | {stages['turn_end_ms']['p50']} | {stages['turn_end_ms']['p95']} |",
        f"| first TTS audio (Piper, sentence cache) | {stages['first_tts_audio_ms']['p50']} | {stages['first_tts_audio_ms']['p95']} |",
        f"| bot starts speaking (output transport) | {stages['bot_started_ms']['p50']} | {stages['bot_started_ms']['p95']} |",
        f"| → caller hears it (VAD onset lag, network, playout, energy threshold) | +{edge['p50']} | +{edge['p95']} |",
    ]
    if data["failures"]:
        lines += ["", "Failures: " + "; ".join(data["failures"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="measure a running agent instead of starting one")
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    process = None
    base_url = args.url
    if base_url is None:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        process = start_process(
            cli("serve", "--port", str(port), "--agent", str(AGENT)),
            f"{base_url}/health",
            RESULTS / "latency_single_call_agent.log",
        )
    try:
        data = asyncio.run(measure(base_url, args.calls))
    finally:
        if process is not None:
            stop_process(process)
    import os

    data.update(calls=args.calls, cpus=os.cpu_count())
    markdown = report(data)
    path = write_result("latency_single_call", data)
    update_doc_section("latency_single_call", markdown)
    print(markdown)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
