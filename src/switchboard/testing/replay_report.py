"""A replay run's outputs: the terminal diff, JUnit XML and an HTML page of every call's diff."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from pathlib import Path

from switchboard.testing.diff import ReplayResult, ReplayRun


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def format_replay(run: ReplayRun) -> str:
    """One line per call (its verdict and latency change), then what differs, in words."""
    passed = sum(c.passed for c in run.calls)
    lines = [
        f"replayed {len(run.calls)} calls from {run.url} against {run.against}: {passed} passed, "
        f"{len(run.calls) - passed} failed, in {run.wall_s:.1f} s (latency margin {run.latency_margin_ms:.0f} ms)"
    ]
    for c in run.calls:
        latency = "" if c.latency_delta_ms is None else f", replies {c.latency_delta_ms:+.0f} ms"
        lines.append(f"{'PASS' if c.passed else 'FAIL'} {c.call_id}: {c.verdict}{latency}" + (f" → {c.new_call_id}" if c.new_call_id else ""))
        if c.error:
            lines.append(f"  - {c.error}")
        lines += [f"  - {n}" for n in c.notes]
    return "\n".join(lines)


def write_junit(run: ReplayRun, path: Path) -> Path:
    failed = [c for c in run.calls if not c.passed]
    suite = ET.Element("testsuite", name="replay", tests=str(len(run.calls)), failures=str(len(failed)), time=f"{run.wall_s:.1f}")
    for c in run.calls:
        case = ET.SubElement(suite, "testcase", classname="replay", name=c.call_id, time=f"{c.duration_s:.1f}")
        if not c.passed:
            lines = ([c.error] if c.error else []) + c.notes
            failure = ET.SubElement(case, "failure", message=lines[0] if lines else c.verdict)
            failure.text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _call_html(c: ReplayResult) -> str:
    cls = "pass" if c.passed else "fail"
    parts = [f'<h2 class="{cls}">{"PASS" if c.passed else "FAIL"} {html.escape(c.call_id)}: {html.escape(c.verdict)}</h2>']
    parts.append(
        f"<p>replayed as <code>{html.escape(c.new_call_id or '-')}</code>; ended by {html.escape(str(c.original_ended_by))} "
        f"→ {html.escape(str(c.new_ended_by))}; median reply latency change {_ms(c.latency_delta_ms)} ms</p>"
    )
    if c.error:
        parts.append(f'<p class="fail">{html.escape(c.error)}</p>')
    if c.notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in c.notes) + "</ul>")
    rows = "".join(
        f'<tr class="{"pass" if t.verdict == "same" else "fail" if t.verdict == "different action" else ""}">'
        f"<td>{t.index + 1}</td><td>{html.escape(t.label)}<br><small>heard: {html.escape(t.original_heard)}"
        f" → {html.escape(t.new_heard)}</small></td><td>{html.escape(t.verdict)}</td>"
        f"<td>{html.escape(t.original_reply)}<br><small>{html.escape('; '.join(t.original_actions))}</small></td>"
        f"<td>{html.escape(t.new_reply)}<br><small>{html.escape('; '.join(t.new_actions))}</small></td>"
        f"<td>{_ms(t.original_latency_ms)} → {_ms(t.new_latency_ms)}</td></tr>"
        for t in c.turns
    )
    parts.append(
        "<table><tr><th>#</th><th>caller</th><th>verdict</th><th>original agent</th><th>replayed agent</th>"
        f"<th>reply latency ms</th></tr>{rows}</table>"
    )
    return "\n".join(parts)


def write_html(run: ReplayRun, path: Path) -> Path:
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:75em}.pass{color:#1a7f37}.fail{color:#cf222e}"
        "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top}"
    )
    body = "\n".join(_call_html(c) for c in run.calls)
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>replay</title><style>{style}</style></head>'
        f"<body><h1>Replay</h1><pre>{html.escape(format_replay(run))}</pre>{body}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def write_replay_outputs(run: ReplayRun, out_dir: Path, junit: Path | None = None) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_text(run.model_dump_json(indent=2) + "\n")
    return {"json": json_path, "html": write_html(run, out_dir / "report.html"), "junit": write_junit(run, junit or out_dir / "junit.xml")}
