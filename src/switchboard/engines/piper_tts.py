"""Piper TTS with one voice per process and a cache of already-synthesized sentences.

Scripted agents say the same sentences again and again; serving them from memory removes
synthesis from the response path. New text is synthesized sentence by sentence and streamed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from piper import PiperVoice

from switchboard.agent.sentences import split_sentences
from switchboard.audio import frame_dbfs
from switchboard.engines.models import piper_voice_files
from switchboard.observability import metrics
from switchboard.observability.headroom import ENGINE_IN_FLIGHT

_CHUNK_SECS = 0.1
_LEADING_SILENCE_DBFS = -50.0


class PiperEngine:
    """A loaded Piper voice with an LRU cache of synthesized text."""

    def __init__(self, *, threads: int = 1, cache_size: int = 512):
        model, config = piper_voice_files()
        self._voice_name = model.name
        self.voice = PiperVoice.load(str(model), config_path=str(config))
        self.sample_rate: int = self.voice.config.sample_rate
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="piper")

    def cached(self, text: str) -> bytes | None:
        with self._cache_lock:
            audio = self._cache.get(_key(text))
            if audio is not None:
                self._cache.move_to_end(_key(text))
            return audio

    def remember(self, text: str, audio: bytes) -> None:
        with self._cache_lock:
            self._cache[_key(text)] = audio
            self._cache.move_to_end(_key(text))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def synthesize(self, text: str) -> bytes:
        """Whole text → int16 PCM at ``sample_rate`` with leading silence trimmed (blocking)."""
        audio = b"".join(chunk.audio_int16_bytes for chunk in self.voice.synthesize(text))
        return trim_leading_silence(audio, self.sample_rate)

    def prewarm(self, utterances: Iterable[str], disk_cache: Path | None = None) -> None:
        """Synthesize fixed utterances, whole and sentence by sentence, into the cache (blocking).

        With ``disk_cache`` (``SWITCHBOARD_TTS_CACHE_DIR``) each sentence is synthesized once per
        machine: a restarted or added worker reads the audio its peers made instead of spending
        ~0.5 s of CPU on each of an agent's fixed lines.
        """
        for utterance in utterances:
            for text in {utterance, *split_sentences(utterance)}:
                if self.cached(text) is None:
                    self.remember(text, self._from_disk(text, disk_cache))

    def _from_disk(self, text: str, disk_cache: Path | None) -> bytes:
        if disk_cache is None:
            return self.synthesize(text)
        digest = hashlib.sha256(f"{self._voice_name}\n{self.sample_rate}\n{_key(text)}".encode()).hexdigest()
        path = disk_cache / f"{digest}.pcm"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        audio = self.synthesize(text)
        disk_cache.mkdir(parents=True, exist_ok=True)
        # Whole files only: workers starting together may write the same sentence at once.
        fd, tmp = tempfile.mkstemp(dir=disk_cache, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(audio)
        os.replace(tmp, path)
        return audio


def trim_leading_silence(audio: bytes, rate: int, keep_ms: int = 10) -> bytes:
    """Drop the quiet lead-in Piper puts before speech: it is latency the caller hears."""
    samples = np.frombuffer(audio, dtype=np.int16)
    levels = frame_dbfs(samples, rate, 10)
    loud = np.flatnonzero(levels > _LEADING_SILENCE_DBFS)
    if len(loud) == 0:
        return audio
    start = max(0, int(loud[0]) * rate // 100 - rate * keep_ms // 1000)
    return samples[start:].tobytes()


def _key(text: str) -> str:
    return " ".join(text.split())


@cache
def shared_piper(threads: int = 1) -> PiperEngine:
    """The process-wide Piper engine, loaded on first use."""
    return PiperEngine(threads=threads)


class LocalPiperTTSService(TTSService):
    """Pipecat TTS service over the shared Piper engine and its sentence cache."""

    def __init__(self, *, engine: PiperEngine | None = None, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="piper", voice="en_US-joe-medium", language="en"),
            **kwargs,
        )
        self._engine = engine or shared_piper()

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        try:
            await self.start_tts_usage_metrics(text)
            async for frame in self._stream_audio_frames_from_iterator(
                self._audio_chunks(text), in_sample_rate=self._engine.sample_rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        except Exception as e:  # a TTS failure must cost one reply, not the call
            logger.exception(f"{self}: synthesis failed for {text!r}")
            metrics.ENGINE_ERRORS.labels(engine="piper").inc()
            yield ErrorFrame(error=f"Piper synthesis failed: {e}")
        finally:
            await self.stop_ttfb_metrics()

    async def _audio_chunks(self, text: str) -> AsyncIterator[bytes]:
        audio = self._engine.cached(text)
        metrics.TTS_CACHE.labels(result="hit" if audio is not None else "miss").inc()
        if audio is None:
            loop = asyncio.get_running_loop()
            with ENGINE_IN_FLIGHT.one():
                audio = await loop.run_in_executor(self._engine.executor, self._engine.synthesize, text)
            self._engine.remember(text, audio)
        step = int(self._engine.sample_rate * _CHUNK_SECS) * 2
        for offset in range(0, len(audio), step):
            yield audio[offset : offset + step]
