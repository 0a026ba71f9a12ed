"""Redacting a recording: the spans where PII was said, and every keypad tone, masked.

The live STT gives no word timings (it decodes without timestamps, for speed), so each channel
of the finished recording is transcribed again, offline, by faster-whisper with word
timestamps (the same tiny.en weights); PII found in that transcript is masked from its first
word's start to its last word's end, with a margin for the timings' error. Keypad tones are
found by the Goertzel DTMF detector on the caller's channel.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from switchboard.dtmf_tones import RATE as DTMF_RATE
from switchboard.dtmf_tones import detect_tones
from switchboard.privacy.detect import detect

# Whisper's word timings are off by up to ~0.2 s at word edges (measured in benchmarks/pii.py).
SPEECH_MARGIN_SECS = 0.25
TONE_MARGIN_SECS = 0.06
_TONE_HZ = 1000.0
_TONE_LEVEL = 0.1  # -20 dBFS: plainly a bleep, not loud


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Span:
    """A stretch of one channel to mask, in seconds."""

    channel: int
    start: float
    end: float
    reason: str


class WordTimings:
    """faster-whisper with word timestamps on the local tiny.en weights, loaded once per process."""

    def __init__(self, model_dir: Path | None = None, threads: int = 1):
        from faster_whisper import WhisperModel

        from switchboard.engines.models import whisper_tiny_en_dir

        self._model = WhisperModel(
            str(model_dir or whisper_tiny_en_dir()), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self._lock = threading.Lock()

    def words(self, audio: np.ndarray) -> list[Word]:
        """The words in float32 16 kHz mono audio, with their times (blocking)."""
        with self._lock:
            segments, _info = self._model.transcribe(
                audio,
                language="en",
                beam_size=1,
                word_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            return [Word(w.word, w.start, w.end) for s in segments for w in (s.words or [])]


_shared: WordTimings | None = None
_shared_lock = threading.Lock()


def shared_word_timings() -> WordTimings:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WordTimings()
        return _shared


def pii_spans(words: list[Word], entities: list[str], known_digits: list[str], channel: int) -> list[Span]:
    """Where in time the PII in ``words`` was said."""
    text, bounds = "", []
    for w in words:
        start = len(text)
        text += w.text
        bounds.append((start, len(text)))
    spans: list[Span] = []
    for e in detect(text, entities, known_digits):
        said = [w for w, (a, b) in zip(words, bounds, strict=True) if a < e.end and b > e.start]
        if said:
            spans.append(Span(channel, max(0.0, said[0].start - SPEECH_MARGIN_SECS), said[-1].end + SPEECH_MARGIN_SECS, e.type))
    return spans


def tone_spans(samples: np.ndarray, rate: int, channel: int) -> list[Span]:
    """Every keypad tone on one channel (int16)."""
    pcm = soxr.resample(samples, rate, DTMF_RATE).astype(np.int16) if rate != DTMF_RATE else samples
    return [
        Span(channel, max(0.0, t.start_s - TONE_MARGIN_SECS), t.start_s + t.duration_s + TONE_MARGIN_SECS, "keypad")
        for t in detect_tones(pcm)
    ]


def mask(samples: np.ndarray, rate: int, spans: list[Span], how: str = "silence") -> np.ndarray:
    """``samples`` (frames × channels, int16) with each span masked, in a copy."""
    out = samples.copy()
    for s in spans:
        a, b = int(s.start * rate), min(len(out), int(s.end * rate))
        if b <= a:
            continue
        if how == "tone":
            t = np.arange(b - a) / rate
            out[a:b, s.channel] = (np.sin(2 * np.pi * _TONE_HZ * t) * _TONE_LEVEL * 32767).astype(np.int16)
        else:
            out[a:b, s.channel] = 0
    return out


def redact_recording(
    flac: bytes,
    entities: list[str],
    known_digits: list[str],
    *,
    keypad_tones: bool = True,
    how: str = "silence",
    timings: WordTimings | None = None,
) -> tuple[bytes, list[Span]]:
    """The recording with PII spans and keypad tones masked, and the spans (blocking: seconds
    of CPU per minute of call, for the transcription)."""
    samples, rate = sf.read(io.BytesIO(flac), dtype="int16", always_2d=True)
    timings = timings or shared_word_timings()
    spans: list[Span] = []
    for channel in range(samples.shape[1]):
        mono = samples[:, channel]
        if not mono.any():
            continue
        audio = mono.astype(np.float32) / 32768.0
        if rate != 16000:
            audio = soxr.resample(audio, rate, 16000)
        spans += pii_spans(timings.words(audio), entities, known_digits, channel)
        if keypad_tones:
            spans += tone_spans(mono, rate, channel)
    buffer = io.BytesIO()
    sf.write(buffer, mask(samples, rate, spans, how), rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue(), spans
