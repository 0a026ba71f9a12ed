"""Audio helpers: G.711 µ-law matches the reference codec, speech bounds are found."""

import warnings

import numpy as np

from switchboard.audio import read_wav, resample, ulaw_decode, ulaw_encode
from switchboard.speech_end import speech_bounds


def test_ulaw_matches_reference_codec() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the stdlib's C implementation of G.711, still shipped in 3.11

    rng = np.random.default_rng(7)
    samples = np.concatenate(
        [np.array([0, 1, -1, -4, 32767, -32768], dtype=np.int16), rng.integers(-32768, 32767, 50000, dtype=np.int16)]
    )
    assert ulaw_encode(samples) == audioop.lin2ulaw(samples.tobytes(), 2)
    encoded = bytes(range(256))
    expected = np.frombuffer(audioop.ulaw2lin(encoded, 2), dtype=np.int16)
    assert np.array_equal(ulaw_decode(encoded), expected)


def test_speech_bounds_find_a_tone_between_silences() -> None:
    rate = 8000
    t = np.arange(rate // 2) / rate
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    audio = np.concatenate([np.zeros(rate, np.int16), tone, np.zeros(rate, np.int16)])
    bounds = speech_bounds(audio, rate)
    assert bounds is not None
    assert abs(bounds.start - 1.0) <= 0.01 and abs(bounds.end - 1.5) <= 0.01
    assert speech_bounds(np.zeros(rate, np.int16), rate) is None


def test_read_wav_resamples_to_requested_rate(speech_clips) -> None:
    clip = speech_clips["pocketsphinx_cards_001_16k.wav"]
    at_8k = read_wav(clip.path, 8000)
    assert abs(len(at_8k) / 8000 - 1.095) < 0.01
    assert len(resample(at_8k, 8000, 16000)) == 2 * len(at_8k)
