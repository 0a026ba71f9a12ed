"""Matplotlib figures for load tests, recordings and capacity, with the targets drawn in.

Figures are built on ``matplotlib.figure.Figure`` directly (the Agg canvas, no pyplot), so no
global figure state and no display are involved; they render to PNG bytes or files.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from switchboard.analysis.recording import RecordingAnalysis

_TARGET = "#c0392b"
_MAIN = "#2c6fbb"
_CALLER = "#2c6fbb"
_AGENT = "#27ae60"


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure to a PNG file, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig, dpi))
    return path


def _figure(title: str, width: float = 7.0, height: float = 3.2) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return fig, ax


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def latency_histogram(latencies_ms: Sequence[float], target_ms: float) -> Figure:
    """Voice-to-voice latency distribution with the p95 target."""
    fig, ax = _figure("Voice-to-voice latency per turn")
    if len(latencies_ms):
        ax.hist(latencies_ms, bins=min(40, max(5, len(latencies_ms) // 3)), color=_MAIN, alpha=0.8)
        p95 = float(np.percentile(latencies_ms, 95))
        ax.axvline(p95, color="black", linestyle=":", label=f"measured p95 {p95:.0f} ms")
    else:
        _no_data(ax)
    ax.axvline(target_ms, color=_TARGET, linestyle="--", label=f"target p95 < {target_ms:.0f} ms")
    ax.set_xlabel("ms from caller's end of speech to first agent audio")
    ax.set_ylabel("turns")
    ax.legend(fontsize=8)
    return fig


def latency_cdf(latencies_ms: Sequence[float], target_ms: float, quantile: float = 0.95) -> Figure:
    """Cumulative share of turns answered within x ms; the target is the point (target, 95 %)."""
    fig, ax = _figure("Latency CDF")
    if len(latencies_ms):
        xs = np.sort(np.asarray(latencies_ms, dtype=float))
        ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", color=_MAIN)
    else:
        _no_data(ax)
    ax.axvline(target_ms, color=_TARGET, linestyle="--", label=f"{target_ms:.0f} ms")
    ax.axhline(quantile, color=_TARGET, linestyle=":", label=f"{quantile:.0%} of turns")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("voice-to-voice latency (ms)")
    ax.set_ylabel("share of turns")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def latency_over_time(times_s: Sequence[float], latencies_ms: Sequence[float], target_ms: float) -> Figure:
    """Each turn's latency at the moment it happened, to show drift as load builds."""
    fig, ax = _figure("Latency over time")
    if len(times_s):
        ax.scatter(times_s, latencies_ms, s=8, color=_MAIN, alpha=0.6)
    else:
        _no_data(ax)
    ax.axhline(target_ms, color=_TARGET, linestyle="--", label=f"target p95 < {target_ms:.0f} ms")
    ax.set_xlabel("seconds since the test began")
    ax.set_ylabel("voice-to-voice (ms)")
    ax.legend(fontsize=8)
    return fig


def concurrency_over_time(times_s: Sequence[float], active: Sequence[int], slots: int) -> Figure:
    """Calls in progress over time (a step function), against the configured slots."""
    fig, ax = _figure("Concurrent calls")
    if len(times_s):
        ax.step(times_s, active, where="post", color=_MAIN)
    else:
        _no_data(ax)
    ax.axhline(slots, color="grey", linestyle=":", label=f"{slots} caller slots")
    ax.set_xlabel("seconds since the test began")
    ax.set_ylabel("active calls")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return fig


def outcomes(success_rate: float | None, target: float, reasons: dict[str, int]) -> Figure:
    """Success rate against its target, and how many calls failed for each reason."""
    fig = Figure(figsize=(7.0, 3.2))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 3]})
    rate = success_rate or 0.0
    left.bar(["success"], [rate * 100], color=_MAIN if rate >= target else _TARGET)
    left.axhline(target * 100, color=_TARGET, linestyle="--", label=f"target > {target:.0%}")
    left.set_ylim(0, 105)
    left.set_ylabel("% of calls")
    left.set_title(f"Success {rate:.1%}", fontsize=11)
    left.legend(fontsize=8, loc="lower center")
    right.set_title("Failure reasons", fontsize=11)
    if reasons:
        names = sorted(reasons, key=reasons.__getitem__)
        right.barh([n[:40] for n in names], [reasons[n] for n in names], color=_TARGET)
        right.set_xlabel("calls")
    else:
        right.text(0.5, 0.5, "no failures", ha="center", va="center", transform=right.transAxes)
        right.set_xticks([])
        right.set_yticks([])
    fig.tight_layout()
    return fig


def clarity(accuracies: Sequence[float], corpus: float | None, target: float) -> Figure:
    """Word accuracy of sampled agent replies as heard over the phone path."""
    fig, ax = _figure("Audio clarity (word accuracy of sampled replies)")
    if len(accuracies):
        ax.hist(np.asarray(accuracies) * 100, bins=np.linspace(0, 100, 21), color=_MAIN, alpha=0.8)
    else:
        _no_data(ax)
    if corpus is not None:
        ax.axvline(corpus * 100, color="black", linestyle=":", label=f"overall {corpus:.1%}")
    ax.axvline(target * 100, color=_TARGET, linestyle="--", label=f"target > {target:.0%}")
    ax.set_xlabel("word accuracy (%)")
    ax.set_ylabel("replies")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def capacity(
    concurrency: Sequence[int], p95_ms: Sequence[float | None], success: Sequence[float],
    p95_limit_ms: float, success_limit: float,
) -> Figure:
    """p95 latency and success rate at each concurrency level, with the limits that define capacity."""
    fig = Figure(figsize=(7.0, 3.2))
    ax = fig.add_subplot()
    ax.set_title("Capacity: latency and success by concurrency", fontsize=11)
    ax.grid(alpha=0.3)
    xs = list(concurrency)
    ax.plot(xs, [np.nan if v is None else v for v in p95_ms], "o-", color=_MAIN, label="p95 latency")
    ax.axhline(p95_limit_ms, color=_MAIN, linestyle="--", alpha=0.7, label=f"p95 limit {p95_limit_ms:.0f} ms")
    ax.set_xticks(xs)
    ax.set_xlabel("concurrent calls")
    ax.set_ylabel("p95 voice-to-voice (ms)")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(xs, [s * 100 for s in success], "s-", color=_AGENT, label="success")
    ax2.axhline(success_limit * 100, color=_AGENT, linestyle=":", label=f"success limit {success_limit:.0%}")
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("success (%)")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(handles, labels, fontsize=8, loc="lower left")
    return fig


def recording(a: RecordingAnalysis, caller: np.ndarray, agent: np.ndarray, rate: int) -> Figure:
    """Both channels of a call, speech shaded, each reply gap and barge-in marked."""
    fig = Figure(figsize=(10.0, 4.0))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, samples, segments, name, color in (
        (top, caller, a.caller_segments, "caller", _CALLER),
        (bottom, agent, a.agent_segments, "agent", _AGENT),
    ):
        hop = max(1, rate // 100)
        n = len(samples) // hop
        env = np.abs(samples[: n * hop].astype(np.float32).reshape(n, hop)).max(axis=1) / 32768
        t = np.arange(n) * hop / rate
        ax.fill_between(t, -env, env, color=color, linewidth=0)
        for seg in segments:
            ax.axvspan(seg.start_s, seg.end_s, color=color, alpha=0.12)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(name)
        ax.set_yticks([])
    for gap in a.gaps:
        if gap.gap_ms is None:
            continue
        x0, x1 = gap.caller_end_s, gap.agent_start_s
        bottom.annotate("", xy=(x1, 0.85), xytext=(x0, 0.85),
                        arrowprops={"arrowstyle": "<->", "color": "black", "lw": 1})
        bottom.text((x0 + x1) / 2, 0.9, f"{gap.gap_ms:.0f} ms", ha="center", va="bottom", fontsize=8)
        for ax in (top, bottom):
            ax.axvline(x0, color="black", linewidth=0.6, linestyle=":")
    for o in a.overlaps:
        for ax in (top, bottom):
            ax.axvspan(o.start_s, o.end_s, color=_TARGET, alpha=0.3)
    bottom.set_xlabel("seconds")
    top.set_title("Caller and agent channels: speech (shaded), reply gaps, overlaps (red)", fontsize=11)
    fig.tight_layout()
    return fig
