"""Line noise alone, at telephone levels: what must never interrupt the agent.

Hiss, mains hum under hiss, a breath and a cough, each followed by digital silence, written as
8 kHz clips for the caller simulator to speak over the agent (false barge-in checks).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from switchboard.audio import TELEPHONY_RATE, write_wav


def _noise(rng: np.random.Generator, seconds: float, dbfs: float, smooth: int = 1,
           envelope: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    x = rng.standard_normal(int(seconds * TELEPHONY_RATE))
    if smooth > 1:  # a crude low-pass: breaths and coughs are darker than hiss
        x = np.convolve(x, np.ones(smooth) / smooth, "same")
    x = x / np.sqrt(np.mean(x * x)) * 32768 * 10 ** (dbfs / 20)
    if envelope is not None:
        x = x * envelope(np.linspace(0.0, 1.0, len(x)))
    return x


def line_noises(seed: int = 7) -> dict[str, np.ndarray]:
    """The noise clips as int16 samples at 8 kHz, by name."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(1.5 * TELEPHONY_RATE)) / TELEPHONY_RATE
    hum = 32768 * 10 ** (-48 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 60 * t)
    clips = {
        "hiss_-50dBFS": _noise(rng, 1.5, -50),
        "hum_and_hiss_-45dBFS": _noise(rng, 1.5, -50) + hum,
        "breath_-38dBFS": _noise(rng, 0.5, -38, smooth=4, envelope=lambda e: np.sin(np.pi * e) ** 2),
        "cough_-22dBFS": _noise(rng, 0.25, -22, smooth=2, envelope=lambda e: np.exp(-6 * e) * (e > 0.02)),
    }
    silence = np.zeros(TELEPHONY_RATE // 2)
    return {
        name: np.clip(np.concatenate([x, silence]), -32768, 32767).astype(np.int16)
        for name, x in clips.items()
    }


def write_line_noises(folder: Path) -> dict[str, Path]:
    """Write the clips as WAV files; returns their paths by name."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, samples in line_noises().items():
        paths[name] = folder / f"{name}.wav"
        write_wav(paths[name], samples, TELEPHONY_RATE)
    return paths
