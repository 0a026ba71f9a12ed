"""Turn-taking from a dual-channel call recording: reply gaps, barge-ins and who talked how much.

Works on any recording with the caller on one channel and the agent on another (the caller
simulator's WAVs, Twilio's dual-channel recordings) at any sample rate. Speech is found by
energy against an adaptive noise floor, so a hissing caller line and a digitally silent agent
line are each judged against their own background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, Field

from switchboard.audio import frame_dbfs, resample

ANALYSIS_VERSION = 1
_CLIP_LEVEL = 32700  # int16 samples at or past this are counted as clipped
_DIGITAL_SILENCE_DBFS = -100.0
_MIN_SIGNAL_SHARE = 0.2
_SILERO_WINDOW = 512  # samples at 16 kHz, the model's frame
_SILERO_CONTEXT = 64
_VAD_THRESHOLD = 0.5


class DetectorParams(BaseModel):
    """How speech is told from background on each channel."""

    detector: Literal["energy", "vad"] = Field(
        default="vad",
        description="energy: adaptive-floor energy alone; vad: energy frames inside Silero VAD "
        "speech, so breaths and hiss after a phrase do not lengthen it",
    )
    vad_pad_ms: int = Field(default=50, description="Energy frames this near VAD speech count")
    frame_ms: int = 10
    margin_db: float = Field(default=12.0, description="Speech is this far above the noise floor")
    min_threshold_dbfs: float = Field(
        default=-55.0, description="Nothing quieter is speech, however quiet the line"
    )
    floor_window_s: float = Field(default=8.0, description="Span the noise floor is estimated over")
    floor_percentile: float = Field(
        default=10.0, description="Quiet share of that span taken as background; a percentile, "
        "not the minimum, so dropouts to digital silence on a noisy line do not drag it down"
    )
    hangover_ms: int = Field(default=250, description="Shorter pauses stay inside one segment")
    min_speech_ms: int = Field(default=60, description="Shorter bursts are clicks, not speech")
    turn_pause_ms: int = Field(
        default=1500,
        description="Same-speaker segments closer than this, with the other party silent in "
        "between, form one turn",
    )


class Segment(BaseModel):
    """A span of speech on one channel, in seconds from the start of the recording."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class ChannelStats(BaseModel):
    """What the detector saw on one channel."""

    channel: int
    speech_s: float
    noise_floor_dbfs: float = Field(description="Median of the adaptive noise floor")
    threshold_dbfs: float = Field(description="Median speech threshold")
    peak_dbfs: float
    clipped_fraction: float


class Gap(BaseModel):
    """A caller turn and the agent's reply to it; negative ``gap_ms`` means the agent began early."""

    caller_start_s: float
    caller_end_s: float
    agent_start_s: float | None
    gap_ms: float | None


class Overlap(BaseModel):
    """Both parties talking at once."""

    start_s: float
    end_s: float
    started_by: Literal["caller", "agent"]
    agent_stopped_ms: float | None = Field(
        default=None, description="For a caller barge-in: how long the agent kept talking"
    )

    @property
    def barge_in(self) -> bool:
        return self.started_by == "caller"


class TalkRatios(BaseModel):
    """Shares of the recording's duration."""

    caller: float
    agent: float
    overlap: float
    silence: float


class RecordingAnalysis(BaseModel):
    """Everything ``switchboard analyze`` reports about one recording."""

    version: int = ANALYSIS_VERSION
    path: str | None = None
    sample_rate: int
    duration_s: float
    caller_channel: int
    agent_channel: int
    caller: ChannelStats
    agent: ChannelStats
    caller_segments: list[Segment]
    agent_segments: list[Segment]
    caller_turns: list[Segment]
    agent_turns: list[Segment]
    gaps: list[Gap]
    overlaps: list[Overlap]
    talk: TalkRatios

    def latencies_ms(self) -> list[float]:
        """Reply gaps of answered caller turns."""
        return [g.gap_ms for g in self.gaps if g.gap_ms is not None]

    def latency_summary(self) -> dict[str, float | int | None]:
        values = np.asarray(self.latencies_ms(), dtype=float)
        if not len(values):
            return {"n": 0, "p50": None, "p95": None, "mean": None, "max": None}
        return {
            "n": len(values),
            "p50": round(float(np.percentile(values, 50)), 1),
            "p95": round(float(np.percentile(values, 95)), 1),
            "mean": round(float(values.mean()), 1),
            "max": round(float(values.max()), 1),
        }


def noise_floor(levels: np.ndarray, params: DetectorParams) -> np.ndarray:
    """Per-frame background level: a low percentile over a centred window, on a coarse grid."""
    n = len(levels)
    if n == 0:
        return levels
    half = max(1, int(params.floor_window_s * 1000 / params.frame_ms) // 2)
    step = max(1, half // 8)
    centers = np.arange(0, n, step)
    floors = [_window_floor(levels[max(0, c - half) : c + half + 1], params) for c in centers]
    return np.interp(np.arange(n), centers, floors)


def _window_floor(window: np.ndarray, params: DetectorParams) -> float:
    # Digital silence is the absence of a signal, not its background: a simulator channel is
    # silent between clips, and a clip's own hiss is what its speech must stand out from. Only
    # when the signal has such a quiet part, though: speech alone has no background in it.
    signal = window[window > _DIGITAL_SILENCE_DBFS]
    if len(signal) >= _MIN_SIGNAL_SHARE * len(window):
        quiet = float(np.percentile(signal, params.floor_percentile))
        if float(np.median(signal)) - quiet > params.margin_db:
            return quiet
    return float(np.percentile(window, params.floor_percentile))


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) frame ranges where ``active`` is true."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def detect_speech(
    samples: np.ndarray, rate: int, params: DetectorParams
) -> tuple[list[Segment], np.ndarray, np.ndarray]:
    """Speech segments of one channel, with its per-frame levels and thresholds."""
    levels = frame_dbfs(samples, rate, params.frame_ms)
    threshold = np.maximum(noise_floor(levels, params) + params.margin_db, params.min_threshold_dbfs)
    active = levels > threshold
    if params.detector == "vad":
        active &= _vad_mask(samples, rate, len(levels), params)
    runs = _runs(active)
    hangover = params.hangover_ms // params.frame_ms
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < hangover:
            merged[-1][1] = b
        else:
            merged.append([int(a), int(b)])
    shortest = params.min_speech_ms // params.frame_ms
    s = params.frame_ms / 1000
    segments = [Segment(start_s=a * s, end_s=b * s) for a, b in merged if b - a >= shortest]
    return segments, levels, threshold


def _vad_mask(samples: np.ndarray, rate: int, n_frames: int, params: DetectorParams) -> np.ndarray:
    """Frames within ``vad_pad_ms`` of a 32 ms window Silero calls speech."""
    # The process-wide session the agent's own VAD uses; loaded only when asked.
    from switchboard.engines.turn_detection import _silero_session

    audio = resample(samples, rate, 16000).astype(np.float32) / 32768.0
    session = _silero_session()
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, _SILERO_CONTEXT), dtype=np.float32)
    sr = np.array(16000, dtype=np.int64)
    mask = np.zeros(n_frames, dtype=bool)
    pad = params.vad_pad_ms / 1000
    for i in range(0, len(audio) - _SILERO_WINDOW + 1, _SILERO_WINDOW):
        chunk = np.concatenate([context, audio[None, i : i + _SILERO_WINDOW]], axis=1)
        prob, state = session.run(None, {"input": chunk, "state": state, "sr": sr})
        context = chunk[:, -_SILERO_CONTEXT:]
        if prob[0][0] > _VAD_THRESHOLD:
            a = max(0.0, i / 16000 - pad) * 1000 / params.frame_ms
            b = ((i + _SILERO_WINDOW) / 16000 + pad) * 1000 / params.frame_ms
            mask[int(a) : int(np.ceil(b))] = True
    return mask


def _ends_within(segments: list[Segment], start: float, end: float) -> bool:
    return any(start <= seg.end_s <= end for seg in segments)


def group_turns(own: list[Segment], other: list[Segment], pause_s: float) -> list[Segment]:
    """Join one party's segments into turns: close together, and the other party did not finish
    speaking in between (someone who talks over the speaker does not end their turn; someone who
    said something and stopped may have been answered)."""
    turns: list[Segment] = []
    for seg in own:
        last = turns[-1] if turns else None
        if (
            last is not None
            and seg.start_s - last.end_s < pause_s
            and not _ends_within(other, last.end_s, seg.start_s)
        ):
            turns[-1] = Segment(start_s=last.start_s, end_s=seg.end_s)
        else:
            turns.append(seg)
    return turns


def find_gaps(caller_turns: list[Segment], agent_turns: list[Segment]) -> list[Gap]:
    """Pair each caller turn with the first agent turn that starts after it began and before the
    caller's next turn; an agent already talking when the caller began is not replying to it."""
    gaps = []
    for i, c in enumerate(caller_turns):
        next_start = caller_turns[i + 1].start_s if i + 1 < len(caller_turns) else np.inf
        reply = next((a for a in agent_turns if c.start_s < a.start_s < next_start), None)
        gaps.append(
            Gap(
                caller_start_s=c.start_s,
                caller_end_s=c.end_s,
                agent_start_s=reply.start_s if reply else None,
                gap_ms=round((reply.start_s - c.end_s) * 1000, 1) if reply else None,
            )
        )
    return gaps


def find_overlaps(caller: list[Segment], agent: list[Segment]) -> list[Overlap]:
    """Where segments of the two channels intersect, and who started talking over whom."""
    out = []
    for c in caller:
        for a in agent:
            start, end = max(c.start_s, a.start_s), min(c.end_s, a.end_s)
            if end <= start:
                continue
            by_caller = c.start_s >= a.start_s
            out.append(
                Overlap(
                    start_s=start,
                    end_s=end,
                    started_by="caller" if by_caller else "agent",
                    agent_stopped_ms=round((a.end_s - c.start_s) * 1000, 1) if by_caller else None,
                )
            )
    return sorted(out, key=lambda o: o.start_s)


def _union_s(segments: list[Segment]) -> float:
    total, reach = 0.0, -np.inf
    for seg in sorted(segments, key=lambda s: s.start_s):
        start = max(seg.start_s, reach)
        if seg.end_s > start:
            total += seg.end_s - start
        reach = max(reach, seg.end_s)
    return total


def _stats(
    channel: int, samples: np.ndarray, segments: list[Segment], levels: np.ndarray,
    threshold: np.ndarray, params: DetectorParams,
) -> ChannelStats:
    floor = threshold - params.margin_db
    return ChannelStats(
        channel=channel,
        speech_s=round(_union_s(segments), 3),
        noise_floor_dbfs=round(float(np.median(floor)) if len(floor) else -120.0, 1),
        threshold_dbfs=round(float(np.median(threshold)) if len(threshold) else -120.0, 1),
        peak_dbfs=round(float(levels.max()) if len(levels) else -120.0, 1),
        clipped_fraction=float(np.mean(np.abs(samples.astype(np.int32)) >= _CLIP_LEVEL))
        if len(samples)
        else 0.0,
    )


def analyze_channels(
    caller: np.ndarray,
    agent: np.ndarray,
    rate: int,
    params: DetectorParams | None = None,
    *,
    caller_channel: int = 0,
    agent_channel: int = 1,
) -> RecordingAnalysis:
    """Analyse int16 caller and agent samples of one recording."""
    params = params or DetectorParams()
    c_segs, c_levels, c_thr = detect_speech(caller, rate, params)
    a_segs, a_levels, a_thr = detect_speech(agent, rate, params)
    pause = params.turn_pause_ms / 1000
    c_turns, a_turns = group_turns(c_segs, a_segs, pause), group_turns(a_segs, c_segs, pause)
    overlaps = find_overlaps(c_segs, a_segs)
    duration = len(caller) / rate
    caller_s, agent_s = _union_s(c_segs), _union_s(a_segs)
    overlap_s = sum(o.end_s - o.start_s for o in overlaps)
    share = (lambda x: round(x / duration, 4)) if duration else (lambda x: 0.0)
    return RecordingAnalysis(
        sample_rate=rate,
        duration_s=round(duration, 3),
        caller_channel=caller_channel,
        agent_channel=agent_channel,
        caller=_stats(caller_channel, caller, c_segs, c_levels, c_thr, params),
        agent=_stats(agent_channel, agent, a_segs, a_levels, a_thr, params),
        caller_segments=c_segs,
        agent_segments=a_segs,
        caller_turns=c_turns,
        agent_turns=a_turns,
        gaps=find_gaps(c_turns, a_turns),
        overlaps=overlaps,
        talk=TalkRatios(
            caller=share(caller_s),
            agent=share(agent_s),
            overlap=share(overlap_s),
            silence=share(max(0.0, duration - (caller_s + agent_s - overlap_s))),
        ),
    )


def read_channels(
    path: str | Path, caller_channel: int = 0, agent_channel: int | None = None
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(caller, agent, rate, agent_channel) from a multichannel WAV; the agent defaults to the
    other channel of a stereo file."""
    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    channels = data.shape[1]
    if channels < 2:
        raise ValueError(f"{path}: {channels} channel; a dual-channel recording is needed")
    if agent_channel is None:
        if channels != 2:
            raise ValueError(f"{path}: {channels} channels; say which is the agent's")
        agent_channel = 1 - caller_channel
    for name, ch in (("caller", caller_channel), ("agent", agent_channel)):
        if not 0 <= ch < channels:
            raise ValueError(f"{path}: no channel {ch} for the {name} ({channels} channels)")
    if caller_channel == agent_channel:
        raise ValueError("caller and agent channels must differ")
    return data[:, caller_channel], data[:, agent_channel], int(rate), agent_channel


def analyze_recording(
    path: str | Path,
    *,
    caller_channel: int = 0,
    agent_channel: int | None = None,
    params: DetectorParams | None = None,
) -> RecordingAnalysis:
    """Analyse a dual-channel WAV file."""
    caller, agent, rate, agent_channel = read_channels(path, caller_channel, agent_channel)
    analysis = analyze_channels(
        caller, agent, rate, params, caller_channel=caller_channel, agent_channel=agent_channel
    )
    analysis.path = str(path)
    return analysis


def format_analysis(analysis: RecordingAnalysis) -> str:
    """A text report: channels, talk ratios, one row per caller turn, then overlaps."""
    a = analysis
    lines = [f"{a.path or 'recording'}: {a.duration_s:.1f} s at {a.sample_rate} Hz"]
    for name, ch in (("caller", a.caller), ("agent", a.agent)):
        lines.append(
            f"  {name:<6} channel {ch.channel}: speech {ch.speech_s:.1f} s, noise floor "
            f"{ch.noise_floor_dbfs:.0f} dBFS, threshold {ch.threshold_dbfs:.0f} dBFS, "
            f"peak {ch.peak_dbfs:.0f} dBFS, clipped {ch.clipped_fraction:.1%}"
        )
    t = a.talk
    lines.append(
        f"  talk: caller {t.caller:.0%}, agent {t.agent:.0%}, both {t.overlap:.0%}, "
        f"silence {t.silence:.0%}"
    )
    header = f"{'turn':>4}  {'caller from':>11}  {'to':>7}  {'agent at':>8}  {'gap ms':>7}"
    lines += ["", header, "-" * len(header)]
    for i, g in enumerate(a.gaps):
        agent = f"{g.agent_start_s:.2f}" if g.agent_start_s is not None else "-"
        gap = f"{g.gap_ms:.0f}" if g.gap_ms is not None else "no reply"
        lines.append(
            f"{i:>4}  {g.caller_start_s:>11.2f}  {g.caller_end_s:>7.2f}  {agent:>8}  {gap:>7}"
        )
    s = a.latency_summary()
    if s["n"]:
        lines.append(
            f"reply gap: n={s['n']} p50 {s['p50']:.0f} ms, p95 {s['p95']:.0f} ms, "
            f"max {s['max']:.0f} ms"
        )
    if a.overlaps:
        lines += ["", "overlaps:"]
        for o in a.overlaps:
            what = "caller barged in" if o.barge_in else "agent talked over the caller"
            stopped = (
                f", agent stopped after {o.agent_stopped_ms:.0f} ms"
                if o.agent_stopped_ms is not None
                else ""
            )
            lines.append(
                f"  {o.start_s:7.2f} s  {(o.end_s - o.start_s) * 1000:5.0f} ms  {what}{stopped}"
            )
    return "\n".join(lines)
