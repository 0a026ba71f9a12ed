"""Turn-taking from a dual-channel call recording: reply gaps, barge-ins and who talked how much.

Works on any recording with the caller on one channel and the agent on another (the caller
simulator's WAVs, Twilio's dual-channel recordings) at any sample rate. Speech is found by the
one definition in ``switchboard.speech_end``: 10 ms frames at least ``MARGIN_DB`` above the
noise floor, isolated clicks dropped (a short burst near speech is a stop's release), short
pauses bridged; speech ends where its last speech frame ends, never where a detector's window
does, or at the signal's own last sample where the line falls digitally silent within
``edge_tail_ms`` (the point the caller simulator and the fake agent count from). The floor is
``noise_floor_dbfs`` over a sliding window inside each signal (digital silence separates
signals: a simulator's clips each have their own background), so a long call's changing line
is judged against itself. Beyond the definition: a dip of a frame or two does not split a run;
a stretch with no voiced frame is a breath or a burst of noise, as is a dark unvoiced stretch
a breath's pause beyond the voice (a bright one is a last fricative, one shorter than
``min_speech_ms`` a stop's release).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, Field

from switchboard.audio import frame_dbfs, resample
from switchboard.speech_end import (
    BRIDGE_MS,
    DIGITAL_SILENCE_DBFS,
    EDGE_TAIL_MS,
    FLOOR_PERCENTILE,
    LEVEL_MS,
    MARGIN_DB,
    MIN_SPEECH_MS,
    MIN_THRESHOLD_DBFS,
    bridge_runs,
    bright_levels,
    drop_clicks,
    noise_floor_dbfs,
    runs_of,
    signal_edges,
)

ANALYSIS_VERSION = 2  # 2: energy edges by speech_end, channel confidence, warnings
_CLIP_LEVEL = 32700  # int16 samples at or past this are counted as clipped
_SILERO_WINDOW = 512  # samples at 16 kHz, the model's frame
_SILERO_CONTEXT = 64
_VAD_THRESHOLD = 0.5
_VOICING_WINDOW_MS = 40
_VOICING_F0_HZ = (60.0, 400.0)
_VOICING_MIN_FRAMES = 2
_SPEECH_LEVEL_PERCENTILE = 90.0
_FLICKER_FRAMES = 2


class DetectorParams(BaseModel):
    """How speech is told from background on each channel (defaults: ``switchboard.speech_end``)."""

    detector: Literal["energy", "vad"] = Field(
        default="energy",
        description="energy: the speech_end definition over an adaptive floor; vad: only those "
        "energy frames inside Silero VAD speech (never later than the energy end)",
    )
    vad_pad_ms: int = Field(default=50, description="Energy frames this near VAD speech count")
    frame_ms: int = Field(default=LEVEL_MS, description="Level frame length")
    margin_db: float = Field(
        default=MARGIN_DB, description="Speech is this far above the noise floor"
    )
    min_threshold_dbfs: float = Field(
        default=MIN_THRESHOLD_DBFS, description="Nothing quieter is speech, however quiet the line"
    )
    floor_window_s: float = Field(default=8.0, description="Span the noise floor is estimated over")
    floor_percentile: float = Field(
        default=FLOOR_PERCENTILE,
        description="Quiet share of the signal in that span taken as background; digital "
        "silence is left out, so a simulator's quiet caller does not drag it down",
    )
    hangover_ms: int = Field(
        default=BRIDGE_MS, description="Shorter pauses stay inside one segment"
    )
    min_speech_ms: int = Field(
        default=MIN_SPEECH_MS, description="Shorter bursts are clicks, not speech"
    )
    voicing: bool = Field(
        default=True,
        description="Drop stretches with no voiced frame (breaths, noise bursts) and breaths "
        "trailing or leading the voice inside a stretch",
    )
    voicing_threshold: float = Field(
        default=0.6,
        description="Normalised autocorrelation at the pitch lag that makes a frame voiced",
    )
    breath_pause_ms: int = Field(
        default=100, description="An unvoiced burst this far from the voice may be a breath"
    )
    fricative_hf_share: float = Field(
        default=0.4,
        description="and is a fricative (speech) if this share of its 0.1-4 kHz energy lies "
        "above 2 kHz; darker bursts are breaths and coughs",
    )
    edge_tail_ms: int = Field(
        default=EDGE_TAIL_MS,
        description="Digital silence this near a speech edge moves it to the signal's edge",
    )
    min_snr_db: float = Field(
        default=15.0, description="Below this speech-to-floor ratio a channel's edges are unsure"
    )
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
    speech_level_dbfs: float | None = Field(
        default=None, description="90th percentile level of the speech (of the signal if none)"
    )
    snr_db: float | None = Field(
        default=None, description="Speech level over the noise floor under it; None: no signal"
    )
    confidence: Literal["high", "low"] = Field(
        default="high", description="low: speech too close to the noise to place its edges"
    )


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
    warnings: list[str] = Field(default_factory=list)

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


def _signals(levels: np.ndarray, min_gap: int) -> list[tuple[int, int, int, int]]:
    """Split a channel into spans ``(start, stop, from, to)``: each signal (or digital silence)
    between digital silences of ``min_gap`` frames or more, and the frames its floor may be
    judged over, the silence around it included but not another signal (a simulator's clips each
    have their own background; a real line, never digitally silent, is one signal)."""
    n = len(levels)
    gaps = [(a, b) for a, b in runs_of(levels <= DIGITAL_SILENCE_DBFS) if b - a >= min_gap]
    spans, at = [], 0
    for i, (a, b) in enumerate(gaps):
        if a > at:
            spans.append((at, a, gaps[i - 1][0] if i else 0, b))
        spans.append((a, b, a, b))
        at = b
    if at < n:
        spans.append((at, n, gaps[-1][0] if gaps else 0, n))
    return spans


def noise_floor(levels: np.ndarray, params: DetectorParams) -> np.ndarray:
    """Per-frame background: ``noise_floor_dbfs`` over a centred window within each signal,
    on a coarse grid."""
    out = np.full(len(levels), -120.0)
    half = max(1, int(params.floor_window_s * 1000 / params.frame_ms) // 2)
    step = max(1, half // 8)
    for start, stop, lo, hi in _signals(levels, max(1, params.hangover_ms // params.frame_ms)):
        centers = np.unique(np.append(np.arange(start, stop, step), stop - 1))
        floors = [
            noise_floor_dbfs(
                levels[max(lo, c - half) : min(hi, c + half + 1)], params.floor_percentile
            )
            for c in centers
        ]
        out[start:stop] = np.interp(np.arange(start, stop), centers, floors)
    return out


def voiced_frames(
    samples: np.ndarray, rate: int, frames: np.ndarray, params: DetectorParams
) -> np.ndarray:
    """Whether each of ``frames`` (indices) is voiced: a window around it repeats at a pitch
    period (normalised autocorrelation peak between 60 and 400 Hz). Breath and hiss do not."""
    hop = rate * params.frame_ms // 1000
    win = rate * _VOICING_WINDOW_MS // 1000
    lo, hi = int(rate / _VOICING_F0_HZ[1]), int(rate / _VOICING_F0_HZ[0])
    out = np.zeros(len(frames), dtype=bool)
    if len(samples) < win or not len(frames):
        return out
    nfft = 1 << int(np.ceil(np.log2(2 * win)))
    lags = np.arange(lo, hi + 1)
    unbias = win / (win - lags)
    x = samples.astype(np.float32)
    for i in range(0, len(frames), 1024):
        chunk = frames[i : i + 1024]
        starts = np.clip(chunk * hop + hop // 2 - win // 2, 0, len(x) - win)
        seg = x[starts[:, None] + np.arange(win)]
        seg -= seg.mean(axis=1, keepdims=True)
        ac = np.fft.irfft(np.abs(np.fft.rfft(seg, nfft)) ** 2, nfft)
        r = ac[:, lo : hi + 1] / (ac[:, :1] + 1e-9) * unbias
        out[i : i + len(chunk)] = r.max(axis=1) >= params.voicing_threshold
    return out


def _band_energy(x: np.ndarray, rate: int) -> tuple[float, float]:
    """Energy of a burst above 2 kHz and in 0.1-4 kHz (the telephone band)."""
    power = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    band = (freqs >= 100) & (freqs <= 4000)
    return float(power[band & (freqs >= 2000)].sum()), float(power[band].sum())


def _kept_tail(
    tail: list[tuple[int, int, float, float]], pause: int, share: float, burst: int
) -> int:
    """How many unvoiced runs beyond the voice (``(near, far, high, total)``: frames from its
    edge, nearest first, and their energy above 2 kHz and in all) are speech: those joined to it
    by shorter pauses than a breath's, and those beyond such a pause if they are bright enough
    for a fricative (a breath or a cough is darker) or are all shorter than ``burst`` frames
    (a stop's release, dark for a /k/ or /p/; no breath is that short)."""
    reach = 0
    for k, (near, far, _, _) in enumerate(tail):
        if near - reach >= pause:
            if all(t[1] - t[0] < burst for t in tail[k:]):
                return len(tail)
            high, total = (sum(t[i] for t in tail[k:]) for i in (2, 3))
            return len(tail) if high >= share * total else k
        reach = far
    return len(tail)


def _stretches(
    runs: list[tuple[int, int]],
    voiced: list[bool],
    bands: list[tuple[float, float]],
    params: DetectorParams,
) -> list[tuple[int, int]]:
    """Bridge runs closer than the hangover into stretches, keeping only the voice and the
    unvoiced bursts that belong to it (see ``_kept_tail``)."""
    bridge = params.hangover_ms // params.frame_ms
    breath = params.breath_pause_ms // params.frame_ms
    burst = max(1, params.min_speech_ms // params.frame_ms)
    groups: list[list[int]] = []
    for i, (a, _) in enumerate(runs):
        if groups and a - runs[groups[-1][-1]][1] < bridge:
            groups[-1].append(i)
        else:
            groups.append([i])
    out = []
    for group in groups:
        if not params.voicing:
            out.append((runs[group[0]][0], runs[group[-1]][1]))
            continue
        with_voice = [k for k, i in enumerate(group) if voiced[i]]
        if not with_voice:
            continue  # a breath, a cough's hiss, a burst of line noise
        first, last = group[with_voice[0]], group[with_voice[-1]]
        v0, v1 = runs[first][0], runs[last][1]
        before = [
            (v0 - runs[i][1], v0 - runs[i][0], *bands[i]) for i in reversed(group[: with_voice[0]])
        ]
        after = [(runs[i][0] - v1, runs[i][1] - v1, *bands[i]) for i in group[with_voice[-1] + 1 :]]
        first -= _kept_tail(before, breath, params.fricative_hf_share, burst)
        last += _kept_tail(after, breath, params.fricative_hf_share, burst)
        out.append((runs[first][0], runs[last][1]))
    return out


def detect_speech(
    samples: np.ndarray, rate: int, params: DetectorParams
) -> tuple[list[Segment], np.ndarray, np.ndarray, np.ndarray]:
    """Speech segments of one channel, with its per-frame levels, noise floor and thresholds."""
    levels = frame_dbfs(samples, rate, params.frame_ms)
    floor = noise_floor(levels, params)
    # threshold_dbfs, per frame: the margin over the floor, never below the quiet-line minimum.
    threshold = np.maximum(floor + params.margin_db, params.min_threshold_dbfs)
    active = levels >= threshold
    if params.detector == "vad":
        active &= _vad_mask(samples, rate, len(levels), params)
    # A dip of a frame or two is no pause: a tail hovering at the threshold is one run. Then
    # isolated clicks go; bridging is left to _stretches, which judges what it joins.
    flicker = np.zeros_like(active)
    for a, b in bridge_runs(runs_of(active), _FLICKER_FRAMES + 1):
        flicker[a:b] = True
    bridge = params.hangover_ms // params.frame_ms
    hf = bright_levels(samples, rate, params.frame_ms)
    bright = hf >= np.maximum(noise_floor(hf, params) + params.margin_db, params.min_threshold_dbfs)
    min_frames = max(1, params.min_speech_ms // params.frame_ms)
    runs = drop_clicks(runs_of(flicker), bridge, min_frames, bright)
    voiced: list[bool] = [False] * len(runs)
    hop = rate * params.frame_ms // 1000
    bands = [(0.0, 0.0)] * len(runs)
    if params.voicing and runs:
        frames = np.concatenate([np.arange(a, b) for a, b in runs])
        flags = voiced_frames(samples, rate, frames, params)
        at = 0
        for i, (a, b) in enumerate(runs):
            voiced[i] = int(flags[at : at + b - a].sum()) >= _VOICING_MIN_FRAMES
            at += b - a
            if not voiced[i]:
                bands[i] = _band_energy(samples[a * hop : b * hop], rate)
    ahead = rate * params.edge_tail_ms // 1000
    segments = []
    for a, b in _stretches(runs, voiced, bands, params):
        start, end = signal_edges(samples, a * hop, b * hop, hop, ahead)
        segments.append(Segment(start_s=start / rate, end_s=end / rate))
    return segments, levels, floor, threshold


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
    channel: int,
    samples: np.ndarray,
    segments: list[Segment],
    levels: np.ndarray,
    floor: np.ndarray,
    threshold: np.ndarray,
    params: DetectorParams,
) -> ChannelStats:
    in_speech = np.zeros(len(levels), dtype=bool)
    per_s = 1000 / params.frame_ms
    for seg in segments:
        in_speech[int(seg.start_s * per_s) : int(np.ceil(seg.end_s * per_s))] = True
    # How sure the edges are: the speech's loud end over the floor beneath it; with no speech
    # found, the signal's (a line of noise alone cannot say whether speech hides in it).
    judged = in_speech if in_speech.any() else levels > DIGITAL_SILENCE_DBFS
    level = snr = None
    if judged.any():
        level = float(np.percentile(levels[judged], _SPEECH_LEVEL_PERCENTILE))
        snr = round(level - float(np.median(floor[judged])), 1)
    return ChannelStats(
        channel=channel,
        speech_s=round(_union_s(segments), 3),
        noise_floor_dbfs=round(float(np.median(floor)) if len(floor) else -120.0, 1),
        threshold_dbfs=round(float(np.median(threshold)) if len(threshold) else -120.0, 1),
        peak_dbfs=round(float(levels.max()) if len(levels) else -120.0, 1),
        clipped_fraction=float(np.mean(np.abs(samples.astype(np.int32)) >= _CLIP_LEVEL))
        if len(samples)
        else 0.0,
        speech_level_dbfs=None if level is None else round(level, 1),
        snr_db=snr,
        confidence="low" if snr is not None and snr < params.min_snr_db else "high",
    )


def _warnings(stats: dict[str, ChannelStats], params: DetectorParams) -> list[str]:
    return [
        f"{name} channel {ch.channel} is too noisy to tell speech from background "
        f"(speech {ch.snr_db:.0f} dB over the floor, under {params.min_snr_db:.0f} dB): "
        "its speech edges, and the gaps measured from them, are unreliable"
        for name, ch in stats.items()
        if ch.confidence == "low"
    ]


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
    c_segs, *c_levels = detect_speech(caller, rate, params)
    a_segs, *a_levels = detect_speech(agent, rate, params)
    pause = params.turn_pause_ms / 1000
    c_turns, a_turns = group_turns(c_segs, a_segs, pause), group_turns(a_segs, c_segs, pause)
    overlaps = find_overlaps(c_segs, a_segs)
    duration = len(caller) / rate
    caller_s, agent_s = _union_s(c_segs), _union_s(a_segs)
    overlap_s = sum(o.end_s - o.start_s for o in overlaps)
    share = (lambda x: round(x / duration, 4)) if duration else (lambda x: 0.0)
    stats = {
        "caller": _stats(caller_channel, caller, c_segs, *c_levels, params),
        "agent": _stats(agent_channel, agent, a_segs, *a_levels, params),
    }
    return RecordingAnalysis(
        sample_rate=rate,
        duration_s=round(duration, 3),
        caller_channel=caller_channel,
        agent_channel=agent_channel,
        caller=stats["caller"],
        agent=stats["agent"],
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
        warnings=_warnings(stats, params),
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
            f"peak {ch.peak_dbfs:.0f} dBFS, clipped {ch.clipped_fraction:.1%}, "
            + (
                f"SNR {ch.snr_db:.0f} dB ({ch.confidence} confidence)"
                if ch.snr_db is not None
                else "no signal"
            )
        )
    lines += [f"  warning: {w}" for w in a.warnings]
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
