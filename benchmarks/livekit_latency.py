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
import threading
import time
from itertools import pairwise
from pathlib import Path

import httpx
import numpy as np

from _common import (
    RESULTS,
    LiveKitBeside,
    free_port,
    socket_ports,
    start_stack,
    stop_stack,
    summarize,
    update_doc_section,
    write_result,
)
from latency_single_call import CLIPS_DIR, STAGES, goodbye_clip, latency_script, turn_clips
from switchboard.call_ids import call_id_for_twilio
from switchboard.loadtest.caller import run_call
from switchboard.loadtest.known_end import KnownEndClip, load_manifest
from switchboard.loadtest.validation import Reading, validate_calls, validate_sip_calls

API_KEY = "benchmark-key"
OUR_NUMBER = "+15550100"
CALLER_NUMBER = "+15105550100"
PATHS = ("twilio", "livekit")
# The WebRTC legs of a LiveKit call: caller's audio in, the agent's audio out.
LEGS = [("livekit-sip", "server"), ("server", "worker"), ("worker", "server"), ("server", "livekit-sip")]
LEG_STEPS = ("sip_in_ms", "sfu_in_ms", "worker_ms", "sfu_out_ms", "sip_out_ms")
REPLY_PACKET_BYTES = 100
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
    record = operator.saved_record(call_id_for_twilio(result.call_sid))
    spoken = [*clips, goodbye_clip(clips[0].parent)]
    failure = None if result.outcome in ("completed", "agent_hung_up") else f"{result.outcome} {result.reason}"
    return {"call_id": record.get("call_id"), "failure": failure,
            "rows": rows_of(result.turns, spoken, record.get("turns", []))}


class PortWatch:
    """Which process each local UDP port belongs to, looked up while a call is up (WebRTC
    ports live only as long as the call)."""

    def __init__(self, pids: dict[str, int]):
        self._pids = pids
        self.ports: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PortWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for role, pid in self._pids.items():
                self.ports.update(dict.fromkeys(socket_ports(pid), role))


def livekit_call(phone, tap, livekit: LiveKitBeside, clips: list[KnownEndClip], goodbye: KnownEndClip,
                 operator: Operator, pids: dict[str, int]) -> dict:
    from switchboard.loadtest.sip_caller import run_sip_call

    began = time.time()
    with PortWatch(pids) as watch:
        result = run_sip_call(phone, livekit.sip_uri(OUR_NUMBER), clips, tap, goodbye=goodbye)
    assert livekit.local is not None
    ports = livekit.local.ports
    server = {*range(ports.rtc_udp_start, ports.rtc_udp_end + 1), ports.rtc_tcp}
    legs = {(a, b): [] for a, b in LEGS}
    flows: dict[str, int] = {}
    for packet in tap.trace:
        if packet.at < began:
            continue
        a = "server" if packet.source in server else watch.ports.get(packet.source)
        b = "server" if packet.target in server else watch.ports.get(packet.target)
        key = f"{a or packet.source}->{b or packet.target}"
        flows[key] = flows.get(key, 0) + 1
        if (a, b) in legs and not 72 <= packet.payload_type <= 76:
            legs[(a, b)].append((packet.at, packet.size, packet.payload_type))
    tap.trace.clear()
    call_id = operator.new_call_id()
    record = operator.saved_record(call_id) if call_id else {}
    spoken = [c.path for c in [*clips, goodbye]]
    stages = record.get("turns", [])
    rows = rows_of(result.wire, spoken, stages)
    for row, turn in zip(rows, result.wire, strict=False):
        if turn.speech_end_at is not None and turn.reply_at is not None:
            row["legs_ms"] = leg_breakdown(legs, turn.speech_end_at, turn.reply_at)
    return {"call_id": record.get("call_id"), "failure": result.failure, "rows": rows,
            "ear_rows": rows_of(result.turns, spoken, stages), "packets_per_flow": flows}


def _caller_audio_ends(packets: list[tuple[float, int, int]], speech_end: float) -> float | None:
    """When the caller's end of speech passed on a WebRTC leg: the first Opus packet after it
    no bigger than the leg's packets of the silence that follows (the clip ends in digital
    silence), less the 20 ms that packet holds. Good to about a packet (±20 ms)."""
    silence = [size for at, size, _ in packets if speech_end + 0.2 <= at <= speech_end + 0.4]
    if not silence:
        return None
    quiet = float(np.median(silence)) + 3
    return next((at - 0.020 for at, size, _ in packets if at >= speech_end and size <= quiet), None)


def _reply_starts(packets: list[tuple[float, int, int]], since: float) -> float | None:
    """The first packet of the agent's reply on a leg: three in a row, 20 ms apart, each too big
    to be the Opus of silence (DTX and silence frames there are under 100 bytes)."""
    later = [(at, size) for at, size, _ in packets if at >= since]
    for i in range(len(later) - 2):
        run = later[i : i + 3]
        if all(size >= REPLY_PACKET_BYTES for _, size in run) and run[2][0] - run[0][0] < 0.06:
            return run[0][0]
    return None


def leg_breakdown(legs: dict, speech_end: float, reply: float) -> dict[str, float | None]:
    """Where one LiveKit turn's time went, between the wire at the phone and the worker, from
    the timing of the WebRTC legs' packets (ms)."""
    sip_out = _caller_audio_ends(legs[("livekit-sip", "server")], speech_end)
    to_worker = _caller_audio_ends(legs[("server", "worker")], speech_end)
    from_worker = _reply_starts(legs[("worker", "server")], to_worker or speech_end)
    to_sip = _reply_starts(legs[("server", "livekit-sip")], from_worker or speech_end)
    marks = [speech_end, sip_out, to_worker, from_worker, to_sip, reply]
    steps = [None if a is None or b is None else round((b - a) * 1000, 1) for a, b in pairwise(marks)]
    return dict(zip(LEG_STEPS, steps, strict=True))


def measure(url: str, livekit: LiveKitBeside, phone, tap, rounds: int, pids: dict[str, int],
            clips: int | None = None) -> dict:
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
                    call = livekit_call(phone, tap, livekit, [by_path[c] for c in chosen], goodbye, operator, pids)
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
        "legs_ms": {step: summarize([r["legs_ms"][step] for r in rows if r.get("legs_ms", {}).get(step) is not None])
                    for step in LEG_STEPS},
        "worker_webrtc_ms": summarize([r["legs_ms"]["worker_ms"] - r["bot_started_ms"] for r in staged
                                       if r.get("legs_ms", {}).get("worker_ms") is not None]),
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
        "the worker's input windowing; on the LiveKit path everything between the phone's wire and the "
        "agent's pipeline, split below.",
        "",
        "The LiveKit path between the phone's wire and the worker, from the timing of the WebRTC legs' packets "
        "(read off loopback beside the phone's RTP; the caller's end of speech is where a leg's Opus packets "
        "shrink to the size of silence, the reply where they grow to speech again; about ±20 ms each; p50 / p95 ms):",
        "",
        "| step | p50 | p95 |",
        "|---|---|---|",
    ]
    leg_names = {"sip_in_ms": "phone's RTP → LiveKit SIP → Opus into the room",
                 "sfu_in_ms": "LiveKit server (SFU) → the worker",
                 "worker_ms": "the worker: WebRTC receive, the pipeline, publishing the reply",
                 "sfu_out_ms": "LiveKit server (SFU) → LiveKit SIP",
                 "sip_out_ms": "LiveKit SIP: Opus decode, mixer, µ-law → RTP to the phone"}
    for step, label in leg_names.items():
        leg = lk["legs_ms"][step]
        lines.append(f"| {label} | {ms(leg)} | {ms(leg, 'p95')} |")
    webrtc = lk["worker_webrtc_ms"]
    lines += [
        f"| of the worker's share: outside its pipeline's own clock (WebRTC jitter buffer, resampling, "
        f"audio source queue) | {ms(webrtc)} | {ms(webrtc, 'p95')} |",
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
        assert livekit.local is not None
        with RtpTap(trace_all=True, tcp_ports={livekit.local.ports.rtc_tcp}) as tap:
            phone = line.phone(CALLER_NUMBER, free_port())
            checked = [] if args.smoke else instruments(phone, tap)
            pids = {"livekit-sip": next(r for r in roles if r.name == "livekit sip").processes[0].pid,
                    "worker": next(r for r in roles if r.name == "workers").processes[0].pid}
            calls = measure(url, livekit, phone, tap, args.calls, pids, 2 if args.smoke else None)
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
