"""The caller simulator's DTMF detector, on Pipecat's own tones, synthetic ones, speech and TTS."""

from pathlib import Path

import numpy as np
import pipecat.audio.dtmf
import pytest

from conftest import REPO, Clip
from switchboard.agent.config import load_agent_config
from switchboard.audio import TELEPHONY_RATE, read_wav, resample, ulaw_decode, ulaw_encode
from switchboard.dtmf_tones import COLUMNS, KEYS, ROWS, detect_tones, digits_in

PIPECAT_TONES = Path(pipecat.audio.dtmf.__file__).parent
_FILES = {"*": "star", "#": "pound"}


def over_the_phone(pcm: np.ndarray) -> np.ndarray:
    """What reaches the caller: the samples through a µ-law round trip."""
    return ulaw_decode(ulaw_encode(pcm))


def pipecat_tones(digits: str) -> np.ndarray:
    """The audio Pipecat's output transport plays for ``digits`` (300 ms tone, 200 ms quiet)."""
    return np.concatenate(
        [read_wav(PIPECAT_TONES / f"dtmf-{_FILES.get(d, d)}.wav", TELEPHONY_RATE) for d in digits]
    )


def tone(key: str, ms: float, dbfs: float = -20.0, row_louder_db: float = 0.0) -> np.ndarray:
    """A synthetic key press: the row and column sines, each at ``dbfs`` (before the twist)."""
    r = next(i for i, keys in enumerate(KEYS) if key in keys)
    c = KEYS[r].index(key)
    t = np.arange(int(TELEPHONY_RATE * ms / 1000)) / TELEPHONY_RATE
    amp = 32767 * 10 ** (dbfs / 20)
    row = amp * 10 ** (row_louder_db / 20) * np.sin(2 * np.pi * ROWS[r] * t)
    col = amp * np.sin(2 * np.pi * COLUMNS[c] * t + 1.0)
    return (row + col).astype(np.int16)


def quiet(ms: float) -> np.ndarray:
    return np.zeros(int(TELEPHONY_RATE * ms / 1000), dtype=np.int16)


def test_pipecats_tones_are_heard_after_a_ulaw_round_trip() -> None:
    digits = "1234567890*#"
    tones = detect_tones(over_the_phone(pipecat_tones(digits)))
    assert "".join(t.digit for t in tones) == digits
    assert [round(t.start_s, 2) for t in tones] == [0.5 * i for i in range(len(digits))]
    assert all(0.27 <= t.duration_s <= 0.33 for t in tones), tones


def test_a_repeated_key_is_two_presses_when_a_gap_separates_them() -> None:
    assert digits_in(over_the_phone(pipecat_tones("11#"))) == "11#"


def test_tones_are_heard_through_line_noise() -> None:
    pcm = pipecat_tones("9021*#").astype(np.float64)
    rms = np.sqrt(np.mean(pcm[:2400] ** 2))  # the first tone's level
    noise = np.random.default_rng(7).normal(0, rms / 10 ** (10 / 20), len(pcm))  # 10 dB SNR
    noisy = np.clip(pcm + noise, -32768, 32767).astype(np.int16)
    assert digits_in(over_the_phone(noisy)) == "9021*#"


def test_a_press_must_last_40_ms_and_presses_need_a_gap() -> None:
    assert digits_in(over_the_phone(np.concatenate([quiet(50), tone("5", 45), quiet(50)]))) == "5"
    assert digits_in(over_the_phone(np.concatenate([quiet(50), tone("5", 20), quiet(50)]))) == ""
    split = np.concatenate([tone("7", 100), quiet(15), tone("7", 100)])  # a dropout, not a gap
    assert digits_in(over_the_phone(split)) == "7"
    twice = np.concatenate([tone("7", 100), quiet(60), tone("7", 100)])
    assert digits_in(over_the_phone(twice)) == "77"


def test_too_quiet_too_twisted_or_a_single_frequency_is_no_key() -> None:
    assert digits_in(over_the_phone(tone("3", 200, dbfs=-30))) == "3"
    assert digits_in(over_the_phone(tone("3", 200, dbfs=-60))) == ""
    assert digits_in(over_the_phone(tone("3", 200, row_louder_db=4))) == "3"
    assert digits_in(over_the_phone(tone("3", 200, row_louder_db=14))) == ""
    t = np.arange(1600) / TELEPHONY_RATE
    row_only = (8000 * np.sin(2 * np.pi * ROWS[0] * t)).astype(np.int16)
    assert digits_in(over_the_phone(row_only)) == ""


def test_the_detector_reads_only_8_khz_audio() -> None:
    with pytest.raises(ValueError, match="8000 Hz"):
        detect_tones(quiet(100), rate=16000)


def test_real_speech_plays_no_keys(speech_clips: dict[str, Clip]) -> None:
    assert len(speech_clips) >= 15
    heard = {
        name: digits_in(over_the_phone(read_wav(clip.path, TELEPHONY_RATE)))
        for name, clip in speech_clips.items()
    }
    assert heard == dict.fromkeys(speech_clips, "")


def test_the_agents_tts_speech_plays_no_keys() -> None:
    from switchboard.engines.piper_tts import shared_piper

    piper = shared_piper()
    agent = load_agent_config(REPO / "src" / "switchboard" / "agents" / "receptionist.yaml")
    lines = agent.fixed_utterances()
    speech = np.concatenate(
        [np.frombuffer(piper.synthesize(line), dtype=np.int16) for line in lines]
    )
    pcm = over_the_phone(resample(speech, piper.sample_rate, TELEPHONY_RATE))
    assert len(pcm) > 30 * TELEPHONY_RATE  # enough speech to mean something
    assert digits_in(pcm) == ""
