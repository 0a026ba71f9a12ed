"""Every latency instrument reads the fake agent's known delay within ±15 ms."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.loadtest.known_end import load_manifest
from switchboard.loadtest.validation import validate_calls, validate_loadtest

CLIPS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "clips"
# Short clips of different speakers and floors, one OSR line at 8 kHz among them.
CLIPS = [c for c in load_manifest(CLIPS_DIR) if c.source in {
    "pocketsphinx_cards_003_16k.wav", "osr_us_0010_s02_8k.wav", "cmu_arctic_aew_a0003_16k.wav"}]
CONFIGS = [(300, 0), (500, 0), (800, 0), (300, 20), (500, 20), (800, 20)]
TOLERANCE_MS = 15


@pytest.fixture(scope="module")
async def call_readings():
    return await validate_calls(CONFIGS, CLIPS)


def test_clips_have_a_known_end_on_a_frame_boundary() -> None:
    assert len(CLIPS) == 3
    for clip in CLIPS:
        assert round(clip.speech_end_s * 1000) % 20 == 0


@pytest.mark.parametrize(("delay", "jitter"), CONFIGS)
def test_caller_simulator_reads_the_known_delay(call_readings, delay, jitter) -> None:
    readings = [r for r in call_readings if r.instrument == "switchboard call" and r.delay_ms == delay
                and r.jitter_ms == jitter]
    assert len(readings) == len(CLIPS)
    if jitter:  # the agent really varied its delay, and the reading followed it
        assert max(r.truth_ms for r in readings) - min(r.truth_ms for r in readings) > 1
    assert all(abs(r.error_ms) <= TOLERANCE_MS for r in readings), readings


def test_load_generator_reads_the_known_delay(tmp_path: Path) -> None:
    readings = validate_loadtest(500, 20, CLIPS_DIR, calls=3, out_dir=tmp_path)
    assert len(readings) == 6
    assert all(r.error_ms is not None and abs(r.error_ms) <= TOLERANCE_MS for r in readings), readings
