"""Latency profiles for the provider emulators, defaulting to published figures.

Sources of the ``published`` figures (the default profile):

* **Deepgram STT.** Pipecat's table of measured STT latency,
  ``pipecat/services/stt_latency.py`` (Pipecat 1.14): ``DEEPGRAM_TTFS_P99 = 0.35`` s, the p99
  time from the end of speech to the final transcript, measured with ``VADParams.stop_secs=0.2``.
  Pipecat sends ``Finalize`` when its VAD reports the stop, i.e. 0.2 s after speech ends, so
  the emulator answers a ``Finalize`` after 0.35 − 0.2 = **0.15 s**. A final produced by
  Deepgram's own endpointing (``endpointing`` ms of silence, 300 in Switchboard's settings)
  gets the same 0.15 s of processing on top of that silence. Interim results every 0.25 s
  of speech, roughly the cadence Deepgram's live API shows.
* **ElevenLabs TTS.** ElevenLabs documents Flash v2.5 (``eleven_flash_v2_5``, Pipecat's and
  Switchboard's default model) at **~75 ms** model latency ("Models" page of the ElevenLabs
  docs, elevenlabs.io/docs/models). The emulator sends the first audio chunk 75 ms after a
  generation is triggered (auto_mode, flush or close_context) and streams the rest at 2× real
  time in 250 ms chunks: generation outpaces playback, as it does against the real service.
  Network time is not added: on loopback, what remains is the provider's own latency.
* **LLM.** A typical time to first token for small hosted chat models (gpt-4o-mini,
  claude-3-5-haiku) of **~0.45 s** and **~80 tokens/s** of output, the order of magnitude
  the Artificial Analysis leaderboard (artificialanalysis.ai, 2024–2025) reports for those
  models. These two were taken from memory of that public page, not re-measured here; pass
  ``--set ttft_ms=...`` / ``--set tokens_per_sec=...`` to use your own.

Other profiles: ``instant`` (no added latency, so a load test measures the platform alone) and
``slow`` (every first result takes 6 s, longer than ``provider_response_timeout_secs``, to
exercise the fallback).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from switchboard.errors import ConfigError

Provider = Literal["deepgram", "elevenlabs", "llm"]


class DeepgramProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    finalize_latency_ms: float = Field(150, ge=0, description="Finalize to its final result.")
    endpoint_latency_ms: float = Field(
        150, ge=0, description="Endpointing silence to the speech_final result."
    )
    interim_interval_ms: float = Field(
        250, gt=0, description="Audio between interim results while speaking."
    )
    speech_threshold_dbfs: float = Field(
        -40.0, description="20 ms frames louder than this are speech."
    )
    speech_start_ms: float = Field(60, ge=20, description="Speech this long starts an utterance.")


class ElevenLabsProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_audio_ms: float = Field(
        75, ge=0, description="Generation trigger to the first audio chunk."
    )
    chunk_ms: float = Field(250, gt=0, description="Audio per message.")
    realtime_factor: float = Field(
        2.0, gt=0, description="Audio seconds sent per wall-clock second."
    )
    ms_per_char: float = Field(65, gt=0, description="Speech length per character (~15 chars/s).")


class LLMProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttft_ms: float = Field(450, ge=0, description="Request to the first content token.")
    tokens_per_sec: float = Field(80, gt=0, description="Streaming rate after the first token.")


_PROFILES: dict[str, dict[str, dict]] = {
    "published": {"deepgram": {}, "elevenlabs": {}, "llm": {}},
    "instant": {
        "deepgram": {"finalize_latency_ms": 0, "endpoint_latency_ms": 0},
        "elevenlabs": {"first_audio_ms": 0, "realtime_factor": 50.0},
        "llm": {"ttft_ms": 0, "tokens_per_sec": 10_000},
    },
    "slow": {
        "deepgram": {"finalize_latency_ms": 6000, "endpoint_latency_ms": 6000},
        "elevenlabs": {"first_audio_ms": 6000},
        "llm": {"ttft_ms": 6000},
    },
}

PROFILE_NAMES = sorted(_PROFILES)
_MODELS: dict[str, type[BaseModel]] = {
    "deepgram": DeepgramProfile,
    "elevenlabs": ElevenLabsProfile,
    "llm": LLMProfile,
}


def load_profile(
    provider: Provider, name: str = "published", overrides: list[str] | None = None
) -> BaseModel:
    """The named profile for ``provider``, with ``key=value`` overrides applied."""
    if name not in _PROFILES:
        raise ConfigError(f"unknown latency profile {name!r}; choose one of {PROFILE_NAMES}")
    values: dict[str, str | float] = dict(_PROFILES[name][provider])
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        values[key.strip()] = value.strip()
    try:
        return _MODELS[provider].model_validate(values)
    except ValueError as e:
        raise ConfigError(f"{provider} profile {name!r}: {e}") from e
