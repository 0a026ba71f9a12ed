"""DTMF tone detector: which keypad digits an 8 kHz recording plays, and when.

The caller simulator uses it to hear the digits an agent sends to a remote IVR as in-band tones;
recording redaction (``switchboard.records.recording_redaction``) to find the keys a caller pressed.
It is the classic Goertzel detector: in 205-sample blocks (25.6 ms, hop 10 ms) the power at the
four row and four column frequencies is measured; a block holds a key when

* the block is loud enough (``min_level_dbfs``);
* one row and one column each stand out from the rest of their group (``min_peak_ratio_db``);
* the two are within the allowed twist (column louder by ``max_twist_db``, row louder by
  ``max_reverse_twist_db``);
* together they carry most of the block's energy (``min_tone_fraction``): speech, music and
  noise spread their energy, a DTMF pair does not.

A key counts once it has held for ``min_tone_ms``, and the next key (even the same one again)
only after ``min_gap_ms`` without it, so a tone's brief dropout is not a second press.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 8000
ROWS = (697.0, 770.0, 852.0, 941.0)
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")
_BLOCK = 205  # the usual Goertzel block at 8 kHz: bins fall close to all eight frequencies
_HOP = 80  # 10 ms
_GRID = np.array([list(keys) for keys in KEYS])
_FREQS = np.array(ROWS + COLUMNS)
# The Goertzel filter's output power for a block is |sum x[n] e^(-i w n)|^2; numpy has no fast
# IIR loop, so every block's eight filters run at once as two matrix products over this table.
_PHASES = 2 * np.pi * np.outer(np.arange(_BLOCK), _FREQS) / RATE
_COS, _SIN = np.cos(_PHASES).astype(np.float32), np.sin(_PHASES).astype(np.float32)


@dataclass(frozen=True)
class DetectorParams:
    """Acceptance thresholds; the defaults follow ITU-T Q.24 loosely, for µ-law phone audio."""

    min_level_dbfs: float = -45.0
    min_peak_ratio_db: float = 10.0
    max_twist_db: float = 8.0
    max_reverse_twist_db: float = 8.0
    min_tone_fraction: float = 0.8
    min_tone_ms: float = 40.0
    min_gap_ms: float = 30.0


@dataclass(frozen=True)
class Tone:
    """One key heard: which, and when (seconds from the recording's start)."""

    digit: str
    start_s: float
    duration_s: float


def _blocks(pcm: np.ndarray) -> np.ndarray:
    """(n, _BLOCK) float samples, one row per hop."""
    x = pcm.astype(np.float32) / 32768.0
    if len(x) < _BLOCK:
        return np.zeros((0, _BLOCK), dtype=np.float32)
    n = 1 + (len(x) - _BLOCK) // _HOP
    index = np.arange(_BLOCK)[None, :] + _HOP * np.arange(n)[:, None]
    return x[index]


def _goertzel_power(blocks: np.ndarray) -> np.ndarray:
    """(n, 8) power of each block at the eight DTMF frequencies, as a fraction of a full-block
    sine's: a pure tone of amplitude A reads A²/2, the same scale as mean square energy."""
    power = (blocks @ _COS) ** 2 + (blocks @ _SIN) ** 2
    return 2 * power / (_BLOCK * _BLOCK)


def block_keys(pcm: np.ndarray, params: DetectorParams = DetectorParams()) -> list[str]:
    """The key each block holds ('' for none), one per 10 ms hop."""
    blocks = _blocks(pcm)
    keys = np.full(len(blocks), "", dtype="<U1")
    energy = np.mean(blocks * blocks, axis=1)
    # A full-scale sine is 0 dBFS and has mean square 1/2.
    loud = np.flatnonzero(energy >= 10 ** (params.min_level_dbfs / 10) / 2)
    if not len(loud):
        return keys.tolist()
    energy, power = energy[loud], _goertzel_power(blocks[loud])  # quiet blocks cost nothing
    rows, cols = np.sort(power[:, :4], axis=1), np.sort(power[:, 4:], axis=1)
    row, col = np.argmax(power[:, :4], axis=1), np.argmax(power[:, 4:], axis=1)
    row_p, col_p = rows[:, -1], cols[:, -1]
    tiny = 1e-12
    peak = 10 ** (params.min_peak_ratio_db / 10)
    distinct = (row_p >= peak * (rows[:, -2] + tiny)) & (col_p >= peak * (cols[:, -2] + tiny))
    twist_db = 10 * np.log10((col_p + tiny) / (row_p + tiny))
    twisted = (twist_db <= params.max_twist_db) & (-twist_db <= params.max_reverse_twist_db)
    pure = row_p + col_p >= params.min_tone_fraction * energy
    held = distinct & twisted & pure
    keys[loud[held]] = _GRID[row[held], col[held]]
    return keys.tolist()


def detect_tones(
    pcm: np.ndarray, rate: int = RATE, params: DetectorParams = DetectorParams()
) -> list[Tone]:
    """The keys played in ``pcm`` (int16 mono at 8 kHz), in order."""
    if rate != RATE:
        raise ValueError(f"the DTMF detector reads {RATE} Hz audio, not {rate} Hz")
    min_blocks = 1 + max(0, int((params.min_tone_ms / 1000 * RATE - _BLOCK) // _HOP))
    # A quiet stretch spoils every block that overlaps it, a block's length more than itself.
    gap_blocks = int((params.min_gap_ms / 1000 * RATE + _BLOCK) // _HOP)
    runs: list[list] = []  # [key, first block, last block]
    for i, key in enumerate(block_keys(pcm, params)):
        if not key:
            continue
        if runs and runs[-1][0] == key and i - runs[-1][2] - 1 < gap_blocks:
            runs[-1][2] = i  # a dropout shorter than the gap is the same press
        else:
            runs.append([key, i, i])
    tones: list[Tone] = []
    last_block = -gap_blocks - 2
    for key, first, last in (r for r in runs if r[2] - r[1] + 1 >= min_blocks):
        if tones and tones[-1].digit == key and first - last_block - 1 < gap_blocks:
            last_block = last  # the same press, split by a blip of something else
            continue
        tones.append(Tone(key, first * _HOP / RATE, ((last - first) * _HOP + _BLOCK) / RATE))
        last_block = last
    return tones


def digits_in(pcm: np.ndarray, rate: int = RATE) -> str:
    """The keys played in ``pcm`` as a dial string ("1234#")."""
    return "".join(t.digit for t in detect_tones(pcm, rate))
