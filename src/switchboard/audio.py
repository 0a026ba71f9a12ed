"""The one home for audio conversions: G.711 µ-law, resampling, WAV I/O and frame levels.

Where speech starts and ends is defined once, in ``switchboard.speech_end``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

TELEPHONY_RATE = 8000
FRAME_MS = 20
TELEPHONY_FRAME_BYTES = TELEPHONY_RATE * FRAME_MS // 1000  # 160 µ-law bytes per 20 ms
# The agent's pipeline hears callers at this rate: Whisper and smart-turn both want 16 kHz, so
# every ingress delivers it (telephony audio is upsampled once at the edge).
PIPELINE_IN_RATE = 16000

_ULAW_BIAS = 0x84
_ULAW_CLIP14 = 8159


def _build_ulaw_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


_ULAW_DECODE = _build_ulaw_decode_table()


def ulaw_decode(data: bytes) -> np.ndarray:
    """µ-law bytes → int16 samples."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples → µ-law bytes (ITU-T G.711, the 14-bit reference algorithm)."""
    pcm = samples.astype(np.int32) >> 2
    sign = np.where(pcm < 0, 0x00, 0x80)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP14) + (_ULAW_BIAS >> 2)
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 5, 0, 7)
    mantissa = (magnitude >> (exponent + 1)) & 0x0F
    code = np.where(magnitude > 0x1FFF, 0x7F, (exponent << 4) | mantissa)
    return (((0x7F ^ code) | sign) & 0xFF).astype(np.uint8).tobytes()


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample int16 mono audio."""
    if from_rate == to_rate:
        return samples.astype(np.int16, copy=False)
    out = soxr.resample(samples.astype(np.float32) / 32768.0, from_rate, to_rate, quality="HQ")
    return np.clip(out * 32768.0, -32768, 32767).astype(np.int16)


def read_wav(path: str | Path, rate: int) -> np.ndarray:
    """Read a WAV file as int16 mono at ``rate`` (first channel of multichannel files)."""
    data, file_rate = sf.read(str(path), dtype="int16", always_2d=True)
    return resample(data[:, 0], file_rate, rate)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write int16 audio; a 2-D ``samples`` of shape (n, channels) writes several channels."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples.astype(np.int16), rate, subtype="PCM_16")


def frame_dbfs(samples: np.ndarray, rate: int, frame_ms: int = 10) -> np.ndarray:
    """RMS level of consecutive frames, in dBFS (silence is -120)."""
    hop = rate * frame_ms // 1000
    n = len(samples) // hop
    if n == 0:
        return np.zeros(0)
    frames = samples[: n * hop].astype(np.float64).reshape(n, hop) / 32768.0
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def dbfs(samples: np.ndarray) -> float:
    """RMS level of a block, in dBFS."""
    if len(samples) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))
    return 20 * np.log10(max(rms, 1e-6))


class TelephonyUpsampler:
    """8 kHz → 16 kHz for a live stream, about 1 ms behind its input.

    A general streaming resampler (soxr) holds back 25-60 ms of audio for its filter, which
    the VAD then hears late: every turn's end is detected that much later. Doubling the rate
    only needs a half-band filter; this one is a 16-tap Hann-windowed sinc, so it waits for
    8 future samples, and telephone audio has nothing above 4 kHz for it to get wrong.
    """

    def __init__(self, taps_per_side: int = 8):
        m = taps_per_side
        k = np.arange(-m, m) + 0.5
        h = np.sinc(k) * np.hanning(2 * m + 2)[1:-1]
        self._h = (h / h.sum()).astype(np.float32)
        self._m = m
        self._history = np.zeros(2 * m - 1, dtype=np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """The next int16 samples in; twice as many out."""
        buf = np.concatenate([self._history, samples.astype(np.float32)])
        odd = np.convolve(buf, self._h, "valid")
        even = buf[self._m - 1 : self._m - 1 + len(samples)]
        self._history = buf[len(buf) - len(self._history) :]
        out = np.empty(2 * len(samples), dtype=np.float32)
        out[0::2], out[1::2] = even, odd
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)
