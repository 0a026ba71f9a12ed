"""A suite run's outputs: the terminal summary a person reads, JUnit XML and an exit status for CI,
and an HTML report with each call's transcript, audio and timings."""

from __future__ import annotations

import html
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from switchboard.testing.results import ScenarioResult, SuiteResult


def progress_line(result: ScenarioResult, done: int, total: int) -> str:
    """One line per finished scenario, printed as it finishes."""
    mark = "PASS" if result.passed else "FAIL"
    line = f"[{done:>{len(str(total))}}/{total}] {mark} {result.name} ({result.duration_s:.1f} s)"
    failures = result.failures()
    if failures:
        line += "\n" + "\n".join(f"        {f}" for f in failures)
    return line


def format_summary(run: SuiteResult) -> str:
    """The verdict, then each failed scenario's failed checks in words, then the timing."""
    passed = len(run.scenarios) - len(run.failed)
    lines = [f"{run.suite}: {passed}/{len(run.scenarios)} scenarios passed against {run.url} in {run.wall_s:.1f} s ({run.parallel} at a time)"]
    latencies = sorted(s.latency_ms for r in run.scenarios for s in r.steps if s.latency_ms is not None)
    if latencies:
        p50, p95 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
        lines.append(f"voice-to-voice over {len(latencies)} replies: p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {latencies[-1]:.0f} ms")
    for result in run.failed:
        lines.append(f"FAILED {result.name}" + (f" ({result.call_id})" if result.call_id else ""))
        lines += [f"  - {f}" for f in result.failures()]
    return "\n".join(lines)


def write_junit(run: SuiteResult, path: Path) -> Path:
    """One testsuite, one testcase per scenario; a failure's message lists its failed checks."""
    suite = ET.Element(
        "testsuite", name=run.suite, tests=str(len(run.scenarios)), failures=str(len(run.failed)),
        errors="0", time=f"{run.wall_s:.1f}",
    )  # fmt: skip
    for result in run.scenarios:
        case = ET.SubElement(suite, "testcase", classname=run.suite, name=result.name, time=f"{result.duration_s:.1f}")
        if not result.passed:
            failures = result.failures()
            failure = ET.SubElement(case, "failure", message=failures[0] if failures else "failed")
            failure.text = "\n".join(failures)
        out = [f"call {result.call_id}"]
        if result.caller is not None:
            out += [f"simulated caller: {result.caller.persona}", f"goal: {result.caller.goal}", result.caller.ending_words]
        out += [f"{s.index + 1}. caller {s.label} | agent: {s.replied}" for s in result.steps]
        ET.SubElement(case, "system-out").text = "\n".join(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
h2{margin-top:2em;border-top:1px solid #ccc;padding-top:1em}
.pass{color:#1a7f37}.fail{color:#cf222e}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f6f8fa}.num{text-align:right;white-space:nowrap}ul{margin:0;padding-left:1.2em}
"""


def _checks(checks) -> str:
    items = "".join(
        f'<li class="{"pass" if c.passed else "fail"}">{"✓" if c.passed else "✗"} {html.escape(c.what)}'
        f"{': ' + html.escape(c.detail) if c.detail else ''}</li>"
        for c in checks
    )
    return f"<ul>{items}</ul>" if items else ""


def _scenario_html(result: ScenarioResult, out_dir: Path) -> str:
    verdict = '<span class="pass">PASS</span>' if result.passed else '<span class="fail">FAIL</span>'
    parts = [f"<h2 id=\"{html.escape(result.name)}\">{verdict} {html.escape(result.name)}</h2>"]
    parts.append(
        f"<p>call <code>{html.escape(result.call_id or '-')}</code>, {result.duration_s:.1f} s, "
        f"outcome {html.escape(result.outcome or '-')}, ended by {html.escape(result.ended_by or '-')}</p>"
    )
    if result.error:
        parts.append(f'<p class="fail">{html.escape(result.error)}</p>')
    if result.caller is not None:
        c = result.caller
        parts.append(
            f"<p>simulated caller: {html.escape(c.persona)}<br>goal: {html.escape(c.goal)}<br>"
            f"{len(c.lines)} lines written by the caller's LLM; {html.escape(c.ending_words)}</p>"
        )
    if result.recording:
        src = os.path.relpath(result.recording, out_dir)
        parts.append(f'<p><audio controls preload="none" src="{html.escape(src)}"></audio> caller left, agent right</p>')
    parts.append(_checks(result.checks))
    rows = [f"<tr><td>greeting</td><td></td><td>{html.escape(result.greeting)}</td><td></td><td></td><td></td></tr>"]
    for s in result.steps:
        timing = f"{s.caller_start_s:.2f}–{s.caller_end_s:.2f}" if s.caller_start_s is not None and s.caller_end_s is not None else ""
        latency = f"{s.latency_ms:.0f}" if s.latency_ms is not None else "–"
        heard = f"<br><small>heard: {html.escape(s.heard)}</small>" if s.heard else ""
        caller_heard = f"<br><small>the caller heard: {html.escape(s.caller_heard)}</small>" if s.caller_heard else ""
        actions = f"<br><small>{html.escape('; '.join(s.actions))}</small>" if s.actions else ""
        rows.append(
            f"<tr><td>{s.index + 1}</td><td>{html.escape(s.label)}{heard}</td>"
            f"<td>{html.escape(s.replied)}<br><small>intents: {html.escape(', '.join(s.intents) or '–')}</small>{actions}{caller_heard}</td>"
            f'<td class="num">{timing}</td><td class="num">{latency}</td><td>{_checks(s.checks)}</td></tr>'
        )
    parts.append(
        "<table><tr><th>step</th><th>caller</th><th>agent</th><th>caller speech (s)</th>"
        "<th>voice-to-voice (ms)</th><th>checks</th></tr>" + "".join(rows) + "</table>"
    )
    return "\n".join(parts)


def write_html(run: SuiteResult, path: Path) -> Path:
    """One page: the verdict, a list of scenarios, then each call in full."""
    out_dir = path.parent
    summary = html.escape(format_summary(run))
    index = "".join(
        f'<li class="{"pass" if r.passed else "fail"}"><a href="#{html.escape(r.name)}">{html.escape(r.name)}</a></li>'
        for r in run.scenarios
    )
    body = "\n".join(_scenario_html(r, out_dir) for r in run.scenarios)
    page = (
        f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(run.suite)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(run.suite)}</h1><pre>{summary}</pre>"
        f"<ul>{index}</ul>{body}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def write_outputs(run: SuiteResult, out_dir: Path, junit: Path | None = None) -> dict[str, Path]:
    """results.json, report.html and junit.xml (or ``junit``) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_text(run.model_dump_json(indent=2) + "\n")
    return {
        "json": json_path,
        "html": write_html(run, out_dir / "report.html"),
        "junit": write_junit(run, junit or out_dir / "junit.xml"),
    }
