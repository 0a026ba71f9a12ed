"""Whisper tiny.en on CTranslate2, shared by every call in a process.

Whisper's encoder is trained on 30 s windows, but CTranslate2 accepts shorter inputs; a
phone utterance of 2-4 s encoded on a window cut to its own length plus a margin costs
about a tenth of the full window. Decoding on a short window tends to repeat itself, so
the token budget is bounded by the audio duration and repeated sentences are dropped.
"""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer
from tokenizers import Tokenizer as HFTokenizer

from switchboard.engines.models import whisper_tiny_en_dir
from switchboard.observability.headroom import ENGINE_IN_FLIGHT

SAMPLE_RATE = 16000
_HOP = 160  # mel frames are 10 ms apart
_FULL_WINDOW_FRAMES = 3000
_MARGIN_FRAMES = 300  # three seconds of padding after the speech keeps the decoder stable
_MIN_WINDOW_FRAMES = 1000


@dataclass(frozen=True)
class Transcript:
    """What Whisper heard in one segment."""

    text: str
    no_speech_prob: float


class WhisperEngine:
    """One loaded Whisper model; ``transcribe`` is thread-safe and runs on one inference thread."""

    def __init__(self, model_dir: Path | None = None, *, threads: int = 2, full_window: bool = False):
        model_dir = model_dir or whisper_tiny_en_dir()
        self._model = ctranslate2.models.Whisper(
            str(model_dir), device="cpu", compute_type="int8", intra_threads=threads
        )
        hf = HFTokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer = Tokenizer(hf, multilingual=self._model.is_multilingual, task="transcribe", language="en")
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._features = FeatureExtractor(feature_size=self._model.n_mels)
        self._full_window = full_window
        # A single inference thread: calls queue instead of oversubscribing the cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")

    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Transcribe float32 mono 16 kHz audio in [-1, 1]."""
        if len(audio) < SAMPLE_RATE // 10:
            return Transcript("", 1.0)
        mel = self._features(audio, padding=0)
        frames = mel.shape[-1]
        window = _FULL_WINDOW_FRAMES
        if not self._full_window:
            window = min(_FULL_WINDOW_FRAMES, max(_MIN_WINDOW_FRAMES, frames + _MARGIN_FRAMES))
        padded = np.zeros((mel.shape[0], window), dtype=np.float32)
        padded[:, : min(frames, window)] = mel[:, :window]
        seconds = len(audio) / SAMPLE_RATE
        result = self._model.generate(
            ctranslate2.StorageView.from_array(padded[None]),
            [self._prompt],
            beam_size=1,
            max_length=int(12 + 6 * seconds),
            return_no_speech_prob=True,
            suppress_blank=True,
            no_repeat_ngram_size=0,
        )[0]
        text = self._tokenizer.decode([t for t in result.sequences_ids[0] if t < self._tokenizer.eot])
        return Transcript(_drop_repeats(text.strip()), float(result.no_speech_prob))

    async def transcribe_async(self, audio: np.ndarray) -> Transcript:
        """Transcribe on the inference thread, off the event loop."""
        loop = asyncio.get_running_loop()
        with ENGINE_IN_FLIGHT.one():
            return await loop.run_in_executor(self._executor, self.transcribe, audio)

    def transcribe_pcm16(self, samples: np.ndarray) -> Transcript:
        """Transcribe int16 mono 16 kHz samples."""
        return self.transcribe(samples.astype(np.float32) / 32768.0)


_SENTENCE = re.compile(r"[^.!?]+[.!?]?")


def _drop_repeats(text: str) -> str:
    """Undo the short-window failure mode where the decoder loops over what it just said."""
    kept: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE.findall(text)):
        if sentence and (not kept or sentence.lower() != kept[-1].lower()):
            kept.append(sentence)
    return _drop_word_loop(" ".join(kept))


def _drop_word_loop(text: str) -> str:
    """"a b c a b c a b" → "a b c": a phrase repeated back to back, possibly cut short."""
    words = text.split()
    folded = [w.lower().strip(",.!?") for w in words]
    last = len(words) - 1
    # Single repeated words ("no no no") are real speech; loops are phrases.
    for period in range(2, len(words) // 2 + 1):
        if all(
            folded[i] == folded[i % period] or (i == last and folded[i % period].startswith(folded[i]))
            for i in range(len(words))
        ):
            return " ".join(words[:period])
    return text


_shared: dict[tuple[int, bool], WhisperEngine] = {}
_shared_lock = threading.Lock()


def shared_whisper(threads: int = 2, full_window: bool = False) -> WhisperEngine:
    """The process-wide Whisper engine, loaded on first use."""
    with _shared_lock:
        key = (threads, full_window)
        if key not in _shared:
            _shared[key] = WhisperEngine(threads=threads, full_window=full_window)
        return _shared[key]
