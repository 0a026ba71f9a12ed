"""What a load test leaves behind: the summary against the seed's targets, JSON and CSV of every
call and turn, PNG plots, and one self-contained HTML page (plots inlined, opens offline)."""

from __future__ import annotations

import base64
import csv
import html
import json
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from pydantic import BaseModel

from switchboard.loadtest import plots
from switchboard.loadtest.clarity import corpus_accuracy
from switchboard.loadtest.loadgen import LoadTestRun, Targets


class Percentiles(BaseModel):
    """Distribution of one measurement, in ms."""

    n: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        if not values:
            return cls(n=0)
        a = np.asarray(values, dtype=float)
        q = {k: round(float(np.percentile(a, p)), 1) for k, p in (("p50", 50), ("p95", 95), ("p99", 99))}
        return cls(n=len(a), mean=round(float(a.mean()), 1), max=round(float(a.max()), 1), **q)


class LoadTestSummary(BaseModel):
    """The numbers a person looks at first."""

    calls: int
    succeeded: int
    success_rate: float | None
    failure_reasons: dict[str, int]
    turns: int
    turns_answered: int
    voice_to_voice_ms: Percentiles
    greeting_ms: Percentiles
    barge_ins: int
    barge_ins_stopped: int
    clarity: float | None
    clarity_replies: int
    wall_s: float
    peak_concurrency: int
    mean_concurrency: float
    cpu_s: float
    cpu_per_call_pct: float | None
    max_clock_lag_ms: float
    targets: Targets
    targets_met: dict[str, bool | None]


def concurrency_steps(run: LoadTestRun) -> tuple[list[float], list[int]]:
    """Calls in progress after each call start and end, as (times, counts)."""
    events = sorted(
        [(c.offset_s, 1) for c in run.calls] + [(c.offset_s + c.result.duration_s, -1) for c in run.calls]
    )
    times, counts, active = [0.0], [0], 0
    for t, step in events:
        active += step
        times.append(t)
        counts.append(active)
    return times, counts


def _latency_points(run: LoadTestRun) -> tuple[list[float], list[float]]:
    points = sorted(
        (c.offset_s + t.caller_speech_end_s, t.voice_to_voice_ms)
        for c in run.calls
        for t in c.result.turns
        if t.voice_to_voice_ms is not None
    )
    return [p[0] for p in points], [p[1] for p in points]


def summarize(run: LoadTestRun, targets: Targets | None = None) -> LoadTestSummary:
    """Aggregate a run and check it against the targets."""
    targets = targets or Targets()
    calls = run.calls
    turns = [t for c in calls for t in c.result.turns]
    succeeded = sum(c.verdict.success for c in calls)
    rate = succeeded / len(calls) if calls else None
    v2v = Percentiles.of([t.voice_to_voice_ms for t in turns if t.voice_to_voice_ms is not None])
    call_seconds = sum(c.result.duration_s for c in calls)
    clarity = corpus_accuracy(run.clarity)
    barge_ins = [t for t in turns if t.barge_in and t.agent_talking_at_barge_in]
    return LoadTestSummary(
        calls=len(calls),
        succeeded=succeeded,
        success_rate=rate,
        failure_reasons=dict(Counter(c.verdict.reason for c in calls if c.verdict.reason).most_common()),
        turns=len(turns),
        turns_answered=sum(c.verdict.turns_answered for c in calls),
        voice_to_voice_ms=v2v,
        greeting_ms=Percentiles.of([c.result.greeting.latency_ms for c in calls if c.result.greeting]),
        barge_ins=len(barge_ins),
        barge_ins_stopped=sum(bool(t.barge_in_ok) for t in barge_ins),
        clarity=clarity,
        clarity_replies=len(run.clarity),
        wall_s=run.wall_s,
        peak_concurrency=max(concurrency_steps(run)[1]),
        mean_concurrency=round(call_seconds / run.wall_s, 2) if run.wall_s else 0.0,
        cpu_s=run.cpu_s,
        cpu_per_call_pct=round(100 * run.cpu_s / call_seconds, 3) if call_seconds else None,
        max_clock_lag_ms=round(max((c.result.max_clock_lag_ms for c in calls), default=0.0), 1),
        targets=targets,
        targets_met={
            "p95_ms": None if v2v.p95 is None else v2v.p95 < targets.p95_ms,
            "success_rate": None if rate is None else rate > targets.success_rate,
            "clarity": None if clarity is None else clarity > targets.clarity,
        },
    )


def call_rows(run: LoadTestRun) -> list[dict[str, object]]:
    """One row per call, for calls.csv."""
    return [
        {
            "index": c.index, "call_sid": c.result.call_sid, "start_s": c.offset_s,
            "duration_s": round(c.result.duration_s, 3), "outcome": c.result.outcome.value,
            "success": c.verdict.success, "reason": c.verdict.reason or "",
            "connected": c.verdict.connected, "greeted": c.verdict.greeted,
            "greeting_ms": c.result.greeting.latency_ms if c.result.greeting else "",
            "turns": c.verdict.turns, "turns_answered": c.verdict.turns_answered,
            "hung_up_cleanly": c.verdict.hung_up_cleanly,
            "max_clock_lag_ms": round(c.result.max_clock_lag_ms, 1),
            "recording": c.result.recording or "",
        }
        for c in run.calls
    ]


def turn_rows(run: LoadTestRun) -> list[dict[str, object]]:
    """One row per caller turn, with the clarity score where the reply was sampled."""
    scored = {(t.call_sid, t.turn): t for t in run.clarity}
    rows = []
    for c in run.calls:
        for t in c.result.turns:
            s = scored.get((c.result.call_sid, t.index))
            rows.append({
                "call_index": c.index, "call_sid": c.result.call_sid, "turn": t.index,
                "clip": Path(t.clip).name, "at_s": round(c.offset_s + t.caller_speech_end_s, 3),
                "voice_to_voice_ms": "" if t.voice_to_voice_ms is None else t.voice_to_voice_ms,
                "within_deadline": t.voice_to_voice_ms is not None
                and t.voice_to_voice_ms <= run.config.turn_deadline_ms,
                "failure": t.failure or "", "barge_in": t.barge_in,
                "barge_in_ok": "" if t.barge_in_ok is None else t.barge_in_ok,
                "agent_stopped_ms": "" if t.agent_stopped_ms is None else t.agent_stopped_ms,
                "heard": s.transcript if s else "", "meant": s.reference if s else "",
                "word_accuracy": round(s.word_accuracy, 3) if s else "",
            })
    return rows


def _write_csv(path: Path, rows: list[dict[str, object]], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def figures(run: LoadTestRun, summary: LoadTestSummary) -> dict[str, Figure]:
    """Every plot of the report, by file stem."""
    t = summary.targets
    times, latencies = _latency_points(run)
    steps = concurrency_steps(run)
    return {
        "latency_histogram": plots.latency_histogram(latencies, t.p95_ms),
        "latency_cdf": plots.latency_cdf(latencies, t.p95_ms),
        "latency_over_time": plots.latency_over_time(times, latencies, t.p95_ms),
        "concurrency": plots.concurrency_over_time(*steps, run.config.concurrency),
        "outcomes": plots.outcomes(summary.success_rate, t.success_rate, summary.failure_reasons),
        "clarity": plots.clarity([c.word_accuracy for c in run.clarity], summary.clarity, t.clarity),
    }


def write_outputs(
    run: LoadTestRun, out_dir: Path, targets: Targets | None = None, png_dir: Path | None = None
) -> dict[str, Path]:
    """results.json, calls.csv, turns.csv, report.html and (given ``png_dir``) one PNG per plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(run, targets)
    paths = {
        "json": out_dir / "results.json", "calls_csv": out_dir / "calls.csv",
        "turns_csv": out_dir / "turns.csv", "html": out_dir / "report.html",
    }
    doc = {"summary": summary.model_dump(mode="json"), **run.model_dump(mode="json")}
    paths["json"].write_text(json.dumps(doc, indent=1) + "\n")
    calls, turns = call_rows(run), turn_rows(run)
    _write_csv(paths["calls_csv"], calls, list(calls[0]) if calls else ["index"])
    _write_csv(paths["turns_csv"], turns, list(turns[0]) if turns else ["call_index"])
    pngs = {name: plots.png_bytes(fig) for name, fig in figures(run, summary).items()}
    paths["html"].write_text(render_html(run, summary, pngs))
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        for name, data in pngs.items():
            paths[f"png_{name}"] = png_dir / f"{name}.png"
            paths[f"png_{name}"].write_bytes(data)
    return paths


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.ok{color:#1e8449;font-weight:bold}.bad{color:#c0392b;font-weight:bold}img{max-width:100%}"""


def _num(x: float | None, unit: str = "") -> str:
    return "–" if x is None else f"{x:.0f}{unit}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _cell(met: bool | None) -> str:
    if met is None:
        return "<td>not measured</td>"
    return '<td class="ok">met</td>' if met else '<td class="bad">missed</td>'


def _table(rows: list[dict[str, object]], limit: int = 500) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>"
        for r in rows[:limit]
    )
    more = f"<p>… and {len(rows) - limit} more in the CSV</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def render_html(run: LoadTestRun, s: LoadTestSummary, pngs: dict[str, bytes]) -> str:
    """One HTML page with the plots inlined as base64 PNG: no scripts, no network."""
    t, v = s.targets, s.voice_to_voice_ms
    targets = (
        "<table><tr><th>goal</th><th>measured</th><th>target</th><th></th></tr>"
        f"<tr><td>p95 voice-to-voice</td><td>{_num(v.p95, ' ms')}</td><td>&lt; {t.p95_ms:.0f} ms</td>"
        f"{_cell(s.targets_met['p95_ms'])}</tr>"
        f"<tr><td>call success</td><td>{_pct(s.success_rate)}</td><td>&gt; {t.success_rate:.0%}</td>"
        f"{_cell(s.targets_met['success_rate'])}</tr>"
        f"<tr><td>audio clarity ({s.clarity_replies} replies)</td><td>{_pct(s.clarity)}</td>"
        f"<td>&gt; {t.clarity:.0%}</td>{_cell(s.targets_met['clarity'])}</tr></table>"
    )
    c = run.config
    cpu_per_call = "–" if s.cpu_per_call_pct is None else f"{s.cpu_per_call_pct:.2f} %"
    facts = [
        ("target", c.url), ("started", run.started_at.isoformat(timespec="seconds")),
        ("caller slots", c.concurrency), ("ramp-up", f"{c.ramp_up_s:g} s"),
        ("duration", f"{run.wall_s:.1f} s"), ("calls", f"{s.calls} ({s.succeeded} succeeded)"),
        ("turns", f"{s.turns} ({s.turns_answered} answered within {c.turn_deadline_ms} ms)"),
        ("voice-to-voice", f"p50 {_num(v.p50)} / p95 {_num(v.p95)} / p99 {_num(v.p99)} / max {_num(v.max)} ms"),
        ("greeting", f"p50 {_num(s.greeting_ms.p50)} / p95 {_num(s.greeting_ms.p95)} ms"),
        ("barge-ins", f"{s.barge_ins_stopped} of {s.barge_ins} stopped the agent in time"),
        ("concurrency", f"peak {s.peak_concurrency}, mean {s.mean_concurrency:.1f}"),
        ("load generator CPU", f"{s.cpu_s:.1f} s in all, {cpu_per_call} of a core per active call; "
         f"worst send-clock lag {s.max_clock_lag_ms:.0f} ms"),
        ("seed", c.seed),
    ]
    facts_html = "<table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(val))}</td></tr>" for k, val in facts
    ) + "</table>"
    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        "</figure>"
        for name, data in pngs.items()
    )
    reasons = [{"reason": k, "calls": n} for k, n in s.failure_reasons.items()]
    clarity = [
        {"call": x.call_sid, "turn": "greeting" if x.turn is None else x.turn, "heard": x.transcript,
         "meant": x.reference, "word accuracy": f"{x.word_accuracy:.0%}"}
        for x in run.clarity
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Switchboard load test</title><style>{_CSS}</style></head><body>"
        f"<h1>Switchboard load test</h1><h2>Targets</h2>{targets}<h2>Run</h2>{facts_html}"
        f"<h2>Plots</h2>{images}<h2>Failure reasons</h2>{_table(reasons)}"
        f"<h2>Clarity samples</h2>{_table(clarity)}<h2>Calls</h2>{_table(call_rows(run))}"
        "</body></html>\n"
    )
