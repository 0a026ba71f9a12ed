"""The ``switchboard loadtest`` and ``switchboard analyze`` subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the CLI builds its parser on every command; heavy imports wait for a run
    from switchboard.loadtest.html_report import LoadTestSummary
    from switchboard.loadtest.loadgen import Progress


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``loadtest`` and ``analyze`` on the main CLI's subparsers."""
    p = subparsers.add_parser(
        "loadtest", help="many simulated Twilio callers at once; JSON, CSV, WAV and an HTML report"
    )
    p.add_argument("--url", default="http://127.0.0.1:8080", help="orchestrator or standalone agent URL")
    p.add_argument("-c", "--concurrency", type=int, default=4, help="simulated callers at once")
    p.add_argument("--ramp-up", type=float, default=0.0, metavar="SECS", help="spread the callers' starts over this long")
    p.add_argument("--duration", type=float, default=None, metavar="SECS", help="start no call after this long")
    p.add_argument("--calls", type=int, default=None, help="total calls (default: one per caller without --duration)")
    p.add_argument("--turn-deadline-ms", type=int, default=3000, help="a slower reply fails the call")
    p.add_argument("--seed", type=int, default=0, help="the same seed places the same calls")
    p.add_argument("--processes", type=int, default=1, help="caller processes to spread the calls over")
    p.add_argument("--out", default="loadtest-report", help="folder for results.json, CSVs, recordings, report.html")
    p.add_argument("--png-dir", default=None, help="also write each plot as a PNG here")
    p.add_argument("--record-fraction", type=float, default=0.1, help="share of calls recorded as stereo WAV")
    p.add_argument("--max-recordings", type=int, default=20)
    p.add_argument("--agent", default=None,
                   help="agent config YAML whose utterances clarity is scored against "
                        "(default SWITCHBOARD_AGENT_CONFIG, as the server reads it)")
    p.add_argument("--no-clarity", action="store_true", help="do not transcribe the recorded calls")
    p.add_argument("--speech-dir", default=None, help="folder with manifest.tsv and the caller's clips")
    p.add_argument("--min-turns", type=int, default=2, help="caller turns before the goodbye")
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--barge-in-probability", type=float, default=0.15)
    p.add_argument("--auth-token", default=None, help="sign requests like Twilio (default TWILIO_AUTH_TOKEN)")
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    p.set_defaults(func=_loadtest)

    p = subparsers.add_parser(
        "analyze", help="turn gaps, barge-ins and talk ratios of a dual-channel call recording"
    )
    p.add_argument("recording", help="WAV/FLAC with the caller and the agent on separate channels, or a stored call's id")
    p.add_argument("--caller-channel", default="left",
                   help="left, right or a 0-based channel number (default left, as the simulator records)")
    p.add_argument("--agent-channel", default=None, help="default: the other channel of a stereo file")
    p.add_argument("--json", default=None, metavar="FILE", help="write the analysis as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="plot both channels and the gaps")
    p.add_argument("--detector", choices=["vad", "energy"], default=None,
                   help="energy (default): the switchboard.speech_end definition; vad: only energy frames "
                   "inside Silero speech (never ends later than energy)")
    p.add_argument("--margin-db", type=float, default=None, help="speech is this far above the noise floor")
    p.add_argument("--hangover-ms", type=int, default=None, help="shorter pauses are bridged inside one stretch of speech")
    p.add_argument("--turn-pause-ms", type=int, default=None, help="shorter pauses stay inside a turn")
    p.set_defaults(func=_analyze)


class ProgressLine:
    """Live progress: one rewritten line on a terminal, a line per report otherwise."""

    def __init__(self, stream: TextIO = sys.stderr):
        self._stream = stream
        self._tty = stream.isatty()

    def __call__(self, p: Progress) -> None:
        latency = (
            f"p50 {p.p50_ms:.0f} ms  p95 {p.p95_ms:.0f} ms"
            if p.p50_ms is not None and p.p95_ms is not None
            else "no replies yet"
        )
        line = f"{p.elapsed_s:7.1f} s  active {p.active:4d}  done {p.done:5d}  failed {p.failed:4d}  {latency}"
        self._stream.write(f"\r{line:<90}" if self._tty else line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")


def _loadtest(args: argparse.Namespace) -> int:
    from switchboard.agent.config import load_agent_config
    from switchboard.loadtest.clarity import ClarityJudge
    from switchboard.loadtest.html_report import summarize, write_outputs
    from switchboard.loadtest.loadgen import LoadTestConfig, run_load_test
    from switchboard.loadtest.scenario import ScenarioOptions

    scenario = ScenarioOptions(
        min_turns=args.min_turns,
        max_turns=args.max_turns,
        barge_in_probability=args.barge_in_probability,
        **({"speech_dir": Path(args.speech_dir)} if args.speech_dir else {}),
    )
    config = LoadTestConfig(
        url=args.url, concurrency=args.concurrency, ramp_up_s=args.ramp_up,
        duration_s=args.duration, calls=args.calls, seed=args.seed,
        turn_deadline_ms=args.turn_deadline_ms, record_fraction=args.record_fraction,
        max_recordings=args.max_recordings, processes=args.processes,
        auth_token=args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN"),
        out_dir=Path(args.out), scenario=scenario,
    )
    judge = None
    if not args.no_clarity:
        if args.agent:
            agent_path = Path(args.agent)
        else:
            from switchboard.settings import get_settings

            agent_path = get_settings().agent_config
        judge = ClarityJudge(load_agent_config(agent_path))
    progress = None if args.quiet else ProgressLine()
    interval = 1.0 if progress is not None and sys.stderr.isatty() else 10.0
    run = run_load_test(config, on_progress=progress, progress_interval_s=interval, clarity_judge=judge)
    if progress is not None:
        progress.close()
    paths = write_outputs(run, config.out_dir, png_dir=Path(args.png_dir) if args.png_dir else None)
    summary = summarize(run)
    print(format_summary(summary))
    print(f"report: {paths['html']}  data: {paths['json']}, {paths['calls_csv']}, {paths['turns_csv']}")
    return 0 if all(met is not False for met in summary.targets_met.values()) else 1


def format_summary(s: LoadTestSummary) -> str:
    """Three lines a person reads after the run: calls, latency, clarity and the caller's cost."""
    v = s.voice_to_voice_ms
    rate = "–" if s.success_rate is None else f"{s.success_rate:.1%}"
    reasons = ", ".join(f"{k} ×{n}" for k, n in s.failure_reasons.items()) or "none"
    latency = "no replies" if v.n == 0 else f"p50 {v.p50:.0f} ms, p95 {v.p95:.0f} ms, max {v.max:.0f} ms"
    clarity = "not measured" if s.clarity is None else f"{s.clarity:.1%} over {s.clarity_replies} replies"
    cpu = "–" if s.cpu_per_call_pct is None else f"{s.cpu_per_call_pct:.2f} % of a core per call"
    return (
        f"calls {s.calls}: {s.succeeded} succeeded ({rate}); failures: {reasons}\n"
        f"voice-to-voice over {v.n} turns: {latency}\n"
        f"clarity {clarity}; load generator {cpu}, peak {s.peak_concurrency} concurrent"
    )


def _channel(value: str | None) -> int | None:
    if value is None:
        return None
    named = {"left": 0, "right": 1}
    if value.lower() in named:
        return named[value.lower()]
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"switchboard analyze: bad channel {value!r} (left, right or a number)") from None


def _analyze(args: argparse.Namespace) -> int:
    from switchboard.analysis.recording import (
        DetectorParams,
        analyze_channels,
        format_analysis,
        read_channels,
    )

    overrides = {
        k: v
        for k, v in (("detector", args.detector), ("margin_db", args.margin_db), ("hangover_ms", args.hangover_ms),
                     ("turn_pause_ms", args.turn_pause_ms))
        if v is not None
    }
    from switchboard.records.commands import resolve_recording

    caller_ch = _channel(args.caller_channel)
    assert caller_ch is not None
    try:
        path = resolve_recording(args.recording)
        caller, agent, rate, agent_ch = read_channels(path, caller_ch, _channel(args.agent_channel))
    except (ValueError, OSError) as e:
        print(f"switchboard analyze: {e}", file=sys.stderr)
        return 2
    analysis = analyze_channels(
        caller, agent, rate, DetectorParams(**overrides), caller_channel=caller_ch, agent_channel=agent_ch
    )
    analysis.path = args.recording
    print(format_analysis(analysis))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(analysis.model_dump_json(indent=2) + "\n")
    if args.plot:
        from switchboard.loadtest.plots import recording, save_png

        save_png(recording(analysis, caller, agent, rate), args.plot)
    return 0
