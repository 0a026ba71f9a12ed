"""The end-of-speech definition: a final stop's release is speech, an isolated click is not,
and the known-end clips are derived reproducibly from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from switchboard.audio import TELEPHONY_RATE as RATE
from switchboard.audio import read_wav
from switchboard.loadtest.known_end import derive, derive_clips, load_manifest
from switchboard.speech_end import LEVEL_MS, speech_bounds

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
CLIPS = REPO / "benchmarks" / "clips"
FRAME_S = LEVEL_MS / 1000
FLOOR_DBFS = -60.0


def _noise(n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(n)
    return x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20)


def _vowel(n: int, dbfs: float = -20.0) -> np.ndarray:
    """A voiced-like tone: 140 Hz with harmonics under a smooth onset and decay."""
    t = np.arange(n) / RATE
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    x *= np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    return x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20)


def _utterance(
    burst_ms: float, gap_ms: float, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """Background, a 400 ms vowel at 0.5 s, a pause of ``gap_ms`` and a noise burst of
    ``burst_ms`` 20 dB above the floor, then 1 s of background; the vowel's end and the
    burst's last sample, in seconds."""
    n = round(2.5 * RATE)
    x = _noise(n, FLOOR_DBFS, rng)
    vowel_at, vowel_n = RATE // 2, round(0.4 * RATE)
    x[vowel_at : vowel_at + vowel_n] += _vowel(vowel_n)
    vowel_end = (vowel_at + vowel_n) / RATE
    burst_at = vowel_at + vowel_n + round(gap_ms * RATE / 1000)
    burst_n = round(burst_ms * RATE / 1000)
    x[burst_at : burst_at + burst_n] += _noise(burst_n, FLOOR_DBFS + 20, rng)
    return np.round(x).astype(np.int16), vowel_end, (burst_at + burst_n) / RATE


@pytest.mark.parametrize("burst_ms", [15, 20, 25])
def test_a_release_140_ms_after_the_vowel_is_where_speech_ends(burst_ms: float) -> None:
    samples, _, burst_end = _utterance(burst_ms, 140, np.random.default_rng(burst_ms))
    bounds = speech_bounds(samples, RATE)
    assert bounds is not None
    assert bounds.end == pytest.approx(burst_end, abs=FRAME_S), (bounds.end, burst_end)


def test_a_click_far_from_speech_is_not_speech() -> None:
    rng = np.random.default_rng(3)
    samples, vowel_end, click_end = _utterance(20, 900, rng)
    bounds = speech_bounds(samples, RATE)
    assert bounds is not None and click_end > bounds.end
    assert bounds.end == pytest.approx(vowel_end, abs=FRAME_S)
    alone = np.round(_noise(2 * RATE, FLOOR_DBFS, rng)).astype(np.int16)
    alone[RATE : RATE + RATE // 50] += np.round(_noise(RATE // 50, FLOOR_DBFS + 20, rng)).astype(
        np.int16
    )
    assert speech_bounds(alone, RATE) is None


def test_a_swell_of_rumble_after_the_vowel_is_not_a_release() -> None:
    """As loud as a release in plain levels, but 150 Hz: a line's hum or a thump, not speech."""
    rng = np.random.default_rng(11)
    samples, vowel_end, _ = _utterance(20, 900, rng)  # its burst is a click, far away
    at, n = round((vowel_end + 0.14) * RATE), RATE // 50
    hum = np.sin(2 * np.pi * 150 * np.arange(n) / RATE) * np.sqrt(2)
    samples[at : at + n] += np.round(hum * 32768 * 10 ** ((FLOOR_DBFS + 20) / 20)).astype(np.int16)
    bounds = speech_bounds(samples, RATE)
    assert bounds is not None
    assert bounds.end == pytest.approx(vowel_end, abs=FRAME_S), (bounds.end, vowel_end)


def test_a_lip_smack_before_the_utterance_does_not_start_it() -> None:
    rng = np.random.default_rng(5)
    samples, vowel_end, _ = _utterance(20, 900, rng)
    smack_at = RATE // 2 - round(0.15 * RATE)  # 150 ms before the vowel
    samples[smack_at : smack_at + RATE // 50] += np.round(
        _noise(RATE // 50, FLOOR_DBFS + 20, rng)
    ).astype(np.int16)
    bounds = speech_bounds(samples, RATE)
    assert bounds is not None and bounds.start == pytest.approx(0.5, abs=FRAME_S)


def test_a_signal_that_stops_right_after_its_speech_ends_at_its_last_sample() -> None:
    samples, _, burst_end = _utterance(20, 140, np.random.default_rng(9))
    stop = round(burst_end * RATE) + 37  # 4.6 ms of fading background, then digital silence
    samples[stop:] = 0
    bounds = speech_bounds(samples, RATE)
    assert bounds is not None and bounds.end == stop / RATE


# "... on the left": the /f/ of "left" (4.50-4.58 s, 2.5-8 kHz energy) sits under the line's
# -34 dBFS threshold, then the /t/ closure (2.5-8 kHz back at the background, 4.58-4.63 s) and
# its release: a broadband burst whose 2.5-4 and 4-8 kHz energy rises 30 dB over the closure at
# 4.635 s and is back at the closure's level by 4.655 s (5 ms windows of the 16 kHz source).
# The old rule ended the speech at the vowel, 4.43 s. The 10 ms frame after the burst carries
# the line's hum (100-1000 Hz, floor -44 dBFS) at the threshold: rumble, not a release.
LEFT_T_RELEASE_END_S = 4.655


def test_a_released_final_t_in_real_speech_ends_the_speech() -> None:
    bounds = speech_bounds(read_wav(SPEECH / "fw_stereo_left_16k.wav", RATE), RATE)
    assert bounds is not None
    assert bounds.end == pytest.approx(LEFT_T_RELEASE_END_S, abs=FRAME_S), bounds.end


def test_known_end_clips_are_reproduced_byte_for_byte(tmp_path: Path) -> None:
    """Deriving the shared clips again gives the committed clips and manifest unchanged."""
    committed = load_manifest(CLIPS)
    sources = [(SPEECH / c.source, c.transcript) for c in committed]
    derive_clips(sources, tmp_path)
    assert (tmp_path / "known_end.tsv").read_bytes() == (CLIPS / "known_end.tsv").read_bytes()
    for clip in committed:
        assert (tmp_path / clip.path.name).read_bytes() == clip.path.read_bytes(), clip.path.name


def test_deriving_a_derived_clip_changes_nothing() -> None:
    """Measured alone, every clip ends where its manifest says (what the analyzer relies on)."""
    for clip in load_manifest(CLIPS):
        samples = read_wav(clip.path, RATE)
        again, _, end_s = derive(samples)
        assert end_s == pytest.approx(clip.speech_end_s, abs=1e-9), clip.path.name
        assert np.array_equal(again, samples), clip.path.name
        bounds = speech_bounds(samples, RATE)
        assert bounds is not None and bounds.end == pytest.approx(clip.speech_end_s, abs=1e-9)
