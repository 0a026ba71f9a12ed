"""Where speech starts and ends: the one definition every instrument and the agent use.

**Speech is the 10 ms frames whose RMS level is at least ``MARGIN_DB`` above the signal's own
noise floor** (and above ``MIN_THRESHOLD_DBFS``, however quiet the line). Pauses shorter than
``bridge_ms`` stay inside one stretch of speech. A burst shorter than ``min_speech_ms`` that
follows speech by less than ``bridge_ms`` is speech too when it also stands out over the floor
of the pre-emphasised signal (the release of a final stop, "forget i*t*", comes 50-200 ms after
the vowel, lasts 10-25 ms and is broadband; a swell of the line's rumble is not); one with no
speech that near before it is a click.
**The end of speech is the end of the last speech frame**: where the signal's energy ends,
never where a detector's trailing window ends (Silero's last speech window closes 55-75 ms
after the energy of clean studio speech has gone); and where the signal itself falls
digitally silent within ``EDGE_TAIL_MS`` of that frame (a cut clip's fade carries little
energy), the end is the signal's own last sample.

The noise floor is a low percentile of the frames that carry any signal: digital silence is
the absence of a signal (a simulator's quiet caller, a clip's padding), not its background.

**Packetization.** A Twilio media stream delivers each 20 ms frame once its last sample has
been captured, so the audio of the frame sent at time ``t`` covers ``[t - 20 ms, t)``. The
caller simulator sends that way and places its recording that way; a speech end inside a
frame therefore reaches the agent up to 20 ms later, which is the network's cost, not the
agent's, and is included in every voice-to-voice figure as a caller would hear it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchboard.audio import frame_dbfs

LEVEL_MS = 10
MARGIN_DB = 10.0
MIN_THRESHOLD_DBFS = -60.0
DIGITAL_SILENCE_DBFS = -100.0
FLOOR_PERCENTILE = 10.0
BRIDGE_MS = 300
MIN_SPEECH_MS = 30
EDGE_TAIL_MS = 50  # digital silence this near a speech edge moves it to the signal's edge
PACKET_MS = 20  # a Twilio media frame
# Live, the gate decides mid-utterance too: at 10 dB the quiet consonants of a noisy line read
# as pauses and end turns early; 6 dB moves the end of a word's decay by only a few ms.
LIVE_MARGIN_DB = 6.0
_LIVE_FLOOR_PERCENTILE = 5.0
_LIVE_MAX_FLOOR_DBFS = -45.0  # a floor above this is taken for speech heard too long


@dataclass(frozen=True)
class SpeechBounds:
    """Where speech starts and ends in a clip, in seconds, and the levels that decided it."""

    start: float
    end: float
    floor_dbfs: float = -120.0
    threshold_dbfs: float = MIN_THRESHOLD_DBFS


def noise_floor_dbfs(levels: np.ndarray, percentile: float = FLOOR_PERCENTILE) -> float:
    """The background level of a stretch of 10 ms frame levels.

    Digital silence is left out when the signal has a quiet part of its own (a clip's hiss is
    what its speech must stand out from); a signal with none (a tone between silences) is
    judged against the silence.
    """
    if len(levels) == 0:
        return -120.0
    signal = levels[levels > DIGITAL_SILENCE_DBFS]
    if len(signal):
        quiet = float(np.percentile(signal, percentile))
        if float(np.median(signal)) - quiet > MARGIN_DB:
            return quiet
    return float(np.percentile(levels, percentile))


def threshold_dbfs(floor_dbfs: float, margin_db: float = MARGIN_DB) -> float:
    """The level speech must reach over a background of ``floor_dbfs``."""
    return max(floor_dbfs + margin_db, MIN_THRESHOLD_DBFS)


def runs_of(active: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) frame ranges where ``active`` is true."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def drop_clicks(
    runs: list[tuple[int, int]],
    bridge_frames: int,
    min_frames: int,
    bright: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """The runs that are speech: every run of ``min_frames`` or more, and each shorter one that
    starts less than ``bridge_frames`` after such a run (a final stop's release) and, where
    ``bright`` (per frame) is given, stands out above the line's floor in it too; a short run
    with no speech that near before it is a click (a lip smack before an utterance is one too)."""
    kept: list[tuple[int, int]] = []
    # Measured from the last long run, so a line's crackle cannot chain on after the speech.
    speech_until: int | None = None
    for a, b in runs:
        if b - a >= min_frames:
            speech_until = b
        elif speech_until is None or a - speech_until >= bridge_frames:
            continue
        elif bright is not None and not bright[a:b].any():
            continue  # a swell of the line's rumble, not a release
        kept.append((a, b))
    return kept


def bright_levels(samples: np.ndarray, rate: int, frame_ms: int = LEVEL_MS) -> np.ndarray:
    """Frame levels (dBFS) of the pre-emphasised signal (its first difference: -22 dB at 100 Hz,
    +3 dB at 2 kHz). A stop's release is a broadband transient and stands out in them over the
    line's floor; a swell of low-frequency rumble or hum, just as loud in plain levels, does not."""
    x = samples.astype(np.float64)
    return frame_dbfs(np.diff(x, prepend=x[:1]), rate, frame_ms)


def bridge_runs(runs: list[tuple[int, int]], bridge_frames: int) -> list[tuple[int, int]]:
    """Runs joined across pauses shorter than ``bridge_frames``."""
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < bridge_frames:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def speech_runs(
    active: np.ndarray, bridge_frames: int, min_frames: int, bright: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """[start, stop) frame ranges of speech: isolated clicks dropped, short pauses bridged."""
    kept = drop_clicks(runs_of(active), bridge_frames, min_frames, bright)
    return bridge_runs(kept, bridge_frames)


def silence_after(x: np.ndarray, at: int, back: int, ahead: int, run: int) -> int | None:
    """The sample after the last non-zero one when digital silence (``run`` zero samples or
    more) begins between ``at - back`` and ``at + ahead``; None if it does not."""
    lo, hi = max(0, at - back), min(len(x), at + ahead + run)
    nonzero = np.flatnonzero(x[lo:hi]) + lo
    if not len(nonzero):
        return None
    following = np.append(nonzero[1:], hi if hi < len(x) else hi + run)
    ok = np.flatnonzero((following - nonzero - 1 >= run) & (nonzero + 1 <= at + ahead))
    return int(nonzero[ok[0]] + 1) if len(ok) else None


def signal_edges(
    samples: np.ndarray, start: int, end: int, hop: int, ahead: int
) -> tuple[int, int]:
    """Sample edges of a stretch of speech, moved to where the signal itself starts or stops
    when the line is digitally silent (``hop`` zero samples or more) within ``ahead`` of them."""
    stop = silence_after(samples, end, hop, ahead, hop)
    back = silence_after(samples[::-1], len(samples) - start, hop, ahead, hop)
    return (start if back is None else len(samples) - back), (end if stop is None else stop)


def speech_bounds(
    samples: np.ndarray,
    rate: int,
    *,
    threshold: float | None = None,
    bridge_ms: int = BRIDGE_MS,
    min_speech_ms: int = MIN_SPEECH_MS,
) -> SpeechBounds | None:
    """First and last speech in a clip by the definition above; None if there is none.

    ``threshold`` (dBFS) overrides the floor-relative level, for synthetic audio.
    """
    levels = frame_dbfs(samples, rate, LEVEL_MS)
    floor = noise_floor_dbfs(levels)
    level = threshold if threshold is not None else threshold_dbfs(floor)
    hf = bright_levels(samples, rate)
    bright = hf >= threshold_dbfs(noise_floor_dbfs(hf))
    bridge, min_frames = bridge_ms // LEVEL_MS, max(1, min_speech_ms // LEVEL_MS)
    runs = speech_runs(levels >= level, bridge, min_frames, bright)
    if not runs:
        return None
    hop = rate * LEVEL_MS // 1000
    ahead = rate * EDGE_TAIL_MS // 1000
    end = runs[-1][1] * hop
    stop = silence_after(samples, end, hop, ahead, hop)
    return SpeechBounds(runs[0][0] * hop / rate, (end if stop is None else stop) / rate, floor, level)


class SpeechEnergyGate:
    """The same definition, live: is the current window speech by energy, and since when not.

    The agent feeds it every analysis window of caller audio. The floor follows the call's own
    line: ``noise_floor_dbfs`` (a low percentile) of the last ``history_s`` of window levels,
    refreshed once a second (a percentile per window per call would cost more than the VAD it
    sits beside). It is capped at ``_LIVE_MAX_FLOOR_DBFS``: on a line noisier than that the
    gate stays open and the VAD's own model tells speech from noise, as it would without it.
    """

    def __init__(self, *, margin_db: float = LIVE_MARGIN_DB, history_s: float = 20.0):
        self._margin_db = margin_db
        self._levels: list[float] = []
        self._history_s = history_s
        self._since_refresh_s = 0.0
        self._window_s = 0.0
        self.floor_dbfs = -120.0
        self.threshold_dbfs = MIN_THRESHOLD_DBFS
        self.speech = False
        self.silent_s = 0.0  # energy below the threshold for this long (0 while speech)
        self.samples_seen = 0

    def update(self, samples: np.ndarray, rate: int) -> bool:
        """Take one window of int16 samples; returns whether it is speech by energy."""
        self.samples_seen += len(samples)
        window_s = len(samples) / rate
        x = samples.astype(np.float32)
        rms = float(np.sqrt(np.dot(x, x) / max(1, len(x)))) / 32768.0
        level = 20.0 * np.log10(max(rms, 1e-6))
        self._levels.append(level)
        keep = int(self._history_s / max(window_s, 1e-3))
        if len(self._levels) > keep:
            del self._levels[: len(self._levels) - keep]
        self._since_refresh_s += window_s
        # Until a second of the line is heard its background is unknown: assume a quiet one.
        if self._since_refresh_s >= 1.0:
            self._since_refresh_s = 0.0
            floor = noise_floor_dbfs(np.asarray(self._levels), _LIVE_FLOOR_PERCENTILE)
            self.floor_dbfs = min(floor, _LIVE_MAX_FLOOR_DBFS)
            self.threshold_dbfs = threshold_dbfs(self.floor_dbfs, self._margin_db)
        self.speech = level >= self.threshold_dbfs
        self.silent_s = 0.0 if self.speech else self.silent_s + window_s
        return self.speech
