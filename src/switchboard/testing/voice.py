"""The simulated caller's voice: lines of a scenario spoken into WAV clips, cached on disk.

Two voices, both unlike the agent's: ``caller`` is the local Piper model (the agent's engine)
raised about three semitones and sped up, which Whisper hears as well as the agent's own voice;
``espeak`` is espeak-ng's formant synthesizer, a different engine altogether (rougher: Whisper
mishears some words, which makes it a harder caller). Clips are keyed by voice and text.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from functools import cache
from pathlib import Path

import numpy as np

from switchboard.audio import TELEPHONY_RATE, read_wav, resample, write_wav

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "switchboard" / "caller-voice"
_PITCH_FACTOR = 1.19  # ~3 semitones up: a different speaker to the ear and to the agent's VAD alike
_LEAD_IN_MS = 100  # a clip starts with a little room tone, as a phone line does
_lock = threading.Lock()


@cache
def _piper():
    from piper import PiperVoice

    from switchboard.engines.models import piper_voice_files

    model, config = piper_voice_files()
    return PiperVoice.load(str(model), config_path=str(config))


def _piper_caller(text: str) -> np.ndarray:
    voice = _piper()
    with _lock:  # one Piper session; synthesis is not re-entrant
        pcm = np.frombuffer(b"".join(c.audio_int16_bytes for c in voice.synthesize(text)), dtype=np.int16)
    rate = voice.config.sample_rate
    # Played back faster than it was made: pitch and tempo rise together.
    return resample(resample(pcm, round(rate * _PITCH_FACTOR), rate), rate, TELEPHONY_RATE)


def _espeak(text: str, path: Path) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("voice espeak: espeak-ng is not installed")
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", "en-us+f3", "-s", "150", "-w", str(raw), text], check=True, timeout=30)
    try:
        return read_wav(raw, TELEPHONY_RATE)
    finally:
        raw.unlink(missing_ok=True)


def load_voice(voice: str = "caller") -> None:
    """Load ``voice``'s model now (Piper takes a second or more), not at the first line."""
    if voice != "espeak":
        _piper()


def spoken_clip(text: str, voice: str = "caller", cache_dir: Path = DEFAULT_CACHE) -> Path:
    """A WAV of ``text`` in ``voice`` at 8 kHz (made once, then read from ``cache_dir``)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{voice}\n{_PITCH_FACTOR}\n{text}".encode()).hexdigest()[:24]
    path = cache_dir / f"{voice}-{key}.wav"
    if path.exists():
        return path
    pcm = _espeak(text, path) if voice == "espeak" else _piper_caller(text)
    pcm = np.concatenate([np.zeros(TELEPHONY_RATE * _LEAD_IN_MS // 1000, dtype=np.int16), pcm])
    partial = path.with_suffix(f".{os.getpid()}.part.wav")
    write_wav(partial, pcm, TELEPHONY_RATE)
    partial.replace(path)  # another run reading the cache never sees half a clip
    return path
