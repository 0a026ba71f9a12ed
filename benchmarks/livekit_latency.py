"""Single-call voice-to-voice through SIP → LiveKit SIP → room → agent → room → LiveKit SIP → SIP,
side by side with the Twilio Media Streams path on the same clips, in one run.

One stack on loopback: Redis, the real LiveKit server and LiveKit SIP, one orchestrator and one
worker (offline engines unless ``--config``). Round by round, the same known-end clips
(``benchmarks/clips``) are spoken once through each path, alternating which goes first, to the
same worker:

- **Twilio**: the caller simulator plays Twilio (signed webhook, Media Streams WebSocket) and
  measures at the WebSocket, as ``latency_single_call.py`` does;
- **LiveKit**: a PJSIP phone (``switchboard.loadtest.sip_phone``) dials LiveKit SIP over SIP
  and RTP (G.711 µ-law); read **on the wire** at the phone's RTP port (``rtp_tap``: kernel
  timestamps of the packets, the SIP edge, the counterpart of the Twilio media stream), and
  **at its ear** (after the phone's own jitter buffer and 20 ms media clock).

Both start from the clip's known end of speech (``switchboard.speech_end``). Before the calls,
both instruments are read against fake agents of known delay (``fake_agent``, ``fake_sip_agent``).
The agent's own stage timings come from the call records. Writes
``benchmarks/results/livekit_latency.json`` and a section of ``docs/performance.md``.

    .venv/bin/python benchmarks/livekit_latency.py [--calls 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from _common import (
    RESULTS,
    LiveKitBeside,
    free_port,
    start_stack,
    stop_stack,
    summarize,
    update_doc_section,
    write_result,
)
from latency_single_call import CLIPS_DIR, STAGES, goodbye_clip, latency_script, turn_clips
from switchboard.loadtest.caller import run_call
from switchboard.loadtest.known_end import KnownEndClip, load_manifest
from switchboard.loadtest.validation import Reading, validate_calls, validate_sip_calls

API_KEY = "benchmark-key"
OUR_NUMBER = "+15550100"
CALLER_NUMBER = "+15105550100"
PATHS = ("twilio", "livekit")
INSTRUMENT_CLIPS = {"pocketsphinx_cards_003_16k.wav", "osr_us_0010_s02_8k.wav", "cmu_arctic_aew_a0003_16k.wav"}
INSTRUMENT_CONFIGS = [(300, 0), (500, 20), (800, 20)]


class Operator:
    """The orchestrator's call records, as an operator reads them."""

    def __init__(self, url: str):
        self._client = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=10)
        self.seen: set[str] = self.call_ids()

    def call_ids(self) -> set[str]:
        return {c["call_id"] for c in self._client.get("/calls", params={"limit": 100}).json()["calls"]}

    def record(self, call_id: str) -> dict:
        response = self._client.get(f"/calls/{call_id}")
        return response.json() if response.status_code == 200 else {}

    def saved_record(self, call_id: str, limit_s: float = 20) -> dict:
        """The call's record once it is stored (after the call ended)."""
        self.seen.add(call_id)
        deadline = time.monotonic() + limit_s
        while not (record := self.record(call_id)).get("ended_at") and time.monotonic() < deadline:
            time.sleep(0.3)
        return record

    def new_call_id(self, limit_s: float = 20) -> str | None:
        """The id of the call that appeared since the last look (a LiveKit call's is its room's)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if new := self.call_ids() - self.seen:
                return new.pop()
            time.sleep(0.3)
        return None

    def close(self) -> None:
        self._client.close()


def rows_of(turns: list, clips: list[Path], stages: list[dict]) -> list[dict]:
    """One row per turn: the clip, voice-to-voice and, when the record has every turn, its stages."""
    paired = len(stages) == len(turns)
    rows = []
    for k, (turn, clip) in enumerate(zip(turns, clips, strict=False)):
        row = {"clip": clip.name, "voice_to_voice_ms": turn.voice_to_voice_ms, "failure": turn.failure}
        if paired:
            row.update({s: stages[k].get(s) for s in STAGES})
        rows.append(row)
    return rows


async def twilio_call(url: str, clips: list[Path], operator: Operator) -> dict:
    async with httpx.AsyncClient(timeout=10) as client:
        result = await run_call(url, latency_script(clips), transcribe=False, http_client=client)
    record = operator.saved_record(f"call-{result.call_sid}")
    spoken = [*clips, goodbye_clip(clips[0].parent)]
    failure = None if result.outcome in ("completed", "agent_hung_up") else f"{result.outcome} {result.reason}"
    return {"call_id": record.get("call_id"), "failure": failure,
            "rows": rows_of(result.turns, spoken, record.get("turns", []))}


def livekit_call(phone, tap, livekit: LiveKitBeside, clips: list[KnownEndClip], goodbye: KnownEndClip,
                 operator: Operator) -> dict:
    from switchboard.loadtest.sip_caller import run_sip_call

    result = run_sip_call(phone, livekit.sip_uri(OUR_NUMBER), clips, tap, goodbye=goodbye)
    call_id = operator.new_call_id()
    record = operator.saved_record(call_id) if call_id else {}
    spoken = [c.path for c in [*clips, goodbye]]
    stages = record.get("turns", [])
    return {"call_id": record.get("call_id"), "failure": result.failure,
            "rows": rows_of(result.wire, spoken, stages), "ear_rows": rows_of(result.turns, spoken, stages)}


def measure(url: str, livekit: LiveKitBeside, phone, tap, rounds: int, clips: int | None = None) -> dict:
    by_path = {Path(c.path): c for c in load_manifest(CLIPS_DIR)}
    pool = turn_clips()[:clips]
    goodbye = by_path[goodbye_clip()]
    per_call = -(-len(pool) // rounds)
    operator = Operator(url)
    calls: dict[str, list[dict]] = {p: [] for p in PATHS}
    try:
        for i in range(rounds):
            chosen = pool[i * per_call : (i + 1) * per_call] or pool[:per_call]
            for path in PATHS if i % 2 == 0 else reversed(PATHS):
                if path == "twilio":
                    call = asyncio.run(twilio_call(url, chosen, operator))
                else:
                    call = livekit_call(phone, tap, livekit, [by_path[c] for c in chosen], goodbye, operator)
                calls[path].append(call)
                v2v = [r["voice_to_voice_ms"] for r in call["rows"]]
                print(f"round {i + 1} {path}: {v2v} {call['failure'] or ''}", flush=True)
    finally:
        operator.close()
    return calls


def summarize_rows(rows: list[dict]) -> dict:
    v2v = [r["voice_to_voice_ms"] for r in rows if r["voice_to_voice_ms"] is not None]
    staged = [r for r in rows if r.get("bot_started_ms") is not None and r["voice_to_voice_ms"] is not None]
    return {
        "voice_to_voice_ms": summarize(v2v),
        "stages_ms": {s: summarize([r[s] for r in staged if r.get(s) is not None]) for s in STAGES},
        "edges_ms": summarize([r["voice_to_voice_ms"] - r["bot_started_ms"] for r in staged]),
    }


def instrument_table(readings: list[Reading]) -> list[dict]:
    table: dict[tuple, list[float]] = {}
    for r in readings:
        table.setdefault((r.instrument, r.delay_ms, r.jitter_ms), []).append(
            r.error_ms if r.error_ms is not None else float("nan"))
    return [{"instrument": k[0], "delay_ms": k[1], "jitter_ms": k[2], "turns": len(v),
             "mean_error_ms": round(float(np.mean(v)), 1), "max_abs_error_ms": round(float(np.max(np.abs(v))), 1)}
            for k, v in table.items()]


def instruments(phone, tap) -> list[dict]:
    clips = [c for c in load_manifest(CLIPS_DIR) if c.source in INSTRUMENT_CLIPS]
    readings = asyncio.run(validate_calls(INSTRUMENT_CONFIGS, clips, RESULTS / "instrument_check"))
    readings = [r for r in readings if r.instrument == "switchboard call"]
    readings += validate_sip_calls(phone, INSTRUMENT_CONFIGS, clips, tap)
    return instrument_table(readings)


def ms(summary: dict, key: str = "p50") -> str:
    value = summary.get(key)
    return "–" if value is None else f"{value:.0f}"


def report(data: dict) -> str:
    s = data["summary"]
    tw, lk, ear = s["twilio"], s["livekit"], s["livekit_ear"]
    delta = (lk["voice_to_voice_ms"]["p95"] or 0) - (tw["voice_to_voice_ms"]["p95"] or 0)
    lines = [
        "## LiveKit SIP beside Twilio Media Streams, one call at a time (`benchmarks/livekit_latency.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {data['cpus']} cores (shared). One "
        "stack on loopback: Redis, the real LiveKit server and LiveKit SIP, one orchestrator, one worker "
        f"({data['config']} engines); {data['rounds']} rounds, each speaking the same known-end clips through both "
        "paths to the same worker, alternating which goes first. **Twilio**: the caller simulator plays Twilio "
        "and measures at the Media Streams WebSocket. **LiveKit**: a PJSIP phone dials LiveKit SIP (SIP, RTP, "
        "G.711 µ-law) and is read on the wire at its RTP port (kernel timestamps of the packets: the SIP edge, "
        "the counterpart of the media stream) and at its ear (after its own jitter buffer and 20 ms media "
        "clock). Both from the clip's known end of speech to the first audible sample of the reply.",
        "",
        "| path | turns | p50 | p95 | max | failed calls |",
        "|---|---|---|---|---|---|",
    ]
    for name, summary, failures in (
        ("Twilio Media Streams (at the WebSocket)", tw, data["failures"]["twilio"]),
        ("LiveKit SIP (on the wire at the phone)", lk, data["failures"]["livekit"]),
        ("LiveKit SIP (at the phone's ear)", ear, data["failures"]["livekit"]),
    ):
        v = summary["voice_to_voice_ms"]
        lines.append(f"| {name} | {v['n']} | {ms(v)} ms | {ms(v, 'p95')} ms | {ms(v, 'max')} ms | {failures} |")
    verdict = "met" if delta <= 40 else "not met"
    lines += [
        "",
        f"Goal, LiveKit p95 ≤ Twilio p95 + 40 ms: **{verdict}** (LiveKit p95 − Twilio p95 = {delta:+.0f} ms).",
        "",
        "Where the time goes (the agent's own clock, from the caller's end of speech as its gate saw it; p50 / p95 ms):",
        "",
        "| stage | Twilio | LiveKit |",
        "|---|---|---|",
    ]
    names = {"vad_stop_ms": "VAD reports the stop", "transcript_ms": "transcript ready",
             "turn_end_ms": "turn ends", "first_tts_audio_ms": "first TTS audio",
             "bot_started_ms": "bot starts speaking (output transport)"}
    for stage, label in names.items():
        a, b = tw["stages_ms"][stage], lk["stages_ms"][stage]
        lines.append(f"| {label} | {ms(a)} / {ms(a, 'p95')} | {ms(b)} / {ms(b, 'p95')} |")
    a, b = tw["edges_ms"], lk["edges_ms"]
    lines += [
        f"| + the edges: caller → agent's gate, and bot start → heard at the edge | +{ms(a)} / +{ms(a, 'p95')} "
        f"| +{ms(b)} / +{ms(b, 'p95')} |",
        "",
        "The edges are voice-to-voice minus the agent's bot-start time: on the Twilio path the WebSocket and "
        "the worker's input windowing; on the LiveKit path RTP into LiveKit SIP, its jitter buffer, Opus "
        "encoding into the room, the SFU, the worker's WebRTC receive, and the same back out, decoded to "
        "µ-law by LiveKit SIP.",
        "",
        "Instrument check (each against a fake agent of known delay; `tests/test_instruments.py`, "
        "`tests/test_sip_instruments.py`):",
        "",
        "| instrument | delay | jitter | turns | mean error | max abs error |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['instrument']} | {r['delay_ms']:.0f} ms | ±{r['jitter_ms']:.0f} ms | {r['turns']} | "
              f"{r['mean_error_ms']} ms | {r['max_abs_error_ms']} ms |" for r in data["instruments"]]
    lines += ["", "The phone's ear lags the wire by its jitter buffer and the phase of its 20 ms media clock "
              "(the mean and spread above): the wire is the figure compared with Twilio's."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4, help="rounds: calls per path")
    parser.add_argument("--config", default="offline", choices=("offline", "cloud"))
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="one round of two clips, no instrument check, no docs")
    args = parser.parse_args()
    if args.smoke:
        args.calls, args.no_docs = 1, True
    from switchboard.loadtest.rtp_tap import RtpTap, tap_available
    from switchboard.loadtest.sip_phone import SipLine

    if not tap_available():
        raise SystemExit("reading the SIP edge needs CAP_NET_RAW (run as root or grant the capability)")
    tmp = Path(tempfile.mkdtemp(prefix="sb-livekit-latency-"))
    livekit = LiveKitBeside(tmp, [OUR_NUMBER])
    env_all = {"SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp}/switchboard.db",
               "SWITCHBOARD_RECORDINGS_URL": str(tmp / "recordings"),
               # One call at a time: the product's default input windowing, as latency_single_call.
               "SWITCHBOARD_INPUT_FRAME_MS": "20"}
    url, roles, _ = start_stack(args.config, 1, 2, tmp, logs=RESULTS / "livekit_latency", worker_prefix="lk",
                                livekit=livekit, env_all=env_all)
    line = SipLine().start()
    try:
        with RtpTap() as tap:
            phone = line.phone(CALLER_NUMBER, free_port())
            checked = [] if args.smoke else instruments(phone, tap)
            calls = measure(url, livekit, phone, tap, args.calls, 2 if args.smoke else None)
    finally:
        line.stop()
        stop_stack(roles)
        shutil.rmtree(tmp, ignore_errors=True)
    rows = {p: [r for c in calls[p] for r in c["rows"]] for p in PATHS}
    data = {
        "rounds": args.calls, "config": args.config, "cpus": os.cpu_count(), "calls": calls,
        "summary": {"twilio": summarize_rows(rows["twilio"]), "livekit": summarize_rows(rows["livekit"]),
                    "livekit_ear": summarize_rows([r for c in calls["livekit"] for r in c["ear_rows"]])},
        "failures": {p: sum(1 for c in calls[p] if c["failure"]) for p in PATHS},
        "instruments": checked,
    }
    markdown = report(data)
    path = write_result("livekit_latency-smoke" if args.smoke else "livekit_latency", data)
    if not args.no_docs:
        update_doc_section("livekit_latency", markdown)
    print(markdown)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
