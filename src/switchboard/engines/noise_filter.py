"""Noise suppression of the caller's audio: RNNoise, per call, as a Pipecat input audio filter.

RNNoise (Xiph, BSD-3-Clause; weights compiled into the library ``pyrnnoise`` ships) is a small
recurrent network over 22 spectral bands that runs on 10 ms frames at 48 kHz. The transport hands
the filter 16 kHz audio, so each call's suppressor resamples by 3 both ways with a short FIR
(0.5 ms of delay each way; Pipecat's own RNNoise filter uses a soxr stream that holds back tens of
milliseconds). ``InputAudioFilter`` runs it right after the input transport, before the VAD and
the STT, so every ingress (Twilio, WebRTC, LiveKit) gets it without its transport params.

``attenuation_limit_db`` mixes the unfiltered signal back in that far below the filtered one, so the
background is lowered by at most that much (as DeepFilterNet's and Krisp's limits do). On the
benchmark's recordings no limit did better than none (benchmarks/noise.py, docs/performance.md).
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import numpy as np
from loguru import logger
from pipecat.audio.filters.base_audio_filter import BaseAudioFilter
from pipecat.frames.frames import (
    FilterControlFrame,
    FilterEnableFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

if TYPE_CHECKING:
    from switchboard.agent.config import NoiseSuppressionConfig

_MODEL_RATE = 48000
_FRAME = 480  # RNNoise's 10 ms at 48 kHz
_MODEL_DELAY = 2 * _FRAME  # its output lags its input by 20 ms (measured, rnnoise 0.2)
_TAPS_PER_SIDE = 8  # at the outer rate: 0.5 ms of look-ahead per resampling stage


def _lowpass(factor: int, taps_per_side: int) -> np.ndarray:
    """A Hann-windowed sinc cutting at the lower rate's Nyquist, for resampling by ``factor``."""
    n = 2 * taps_per_side * factor + 1  # odd: a whole number of samples of delay
    k = np.arange(n) - (n - 1) / 2
    h = np.sinc(k / factor) * np.hanning(n + 2)[1:-1]
    return (h / h.sum()).astype(np.float32)


class _UpBy:
    """Streaming integer upsampler: ``factor`` outputs per input sample."""

    def __init__(self, factor: int, taps_per_side: int = _TAPS_PER_SIDE):
        self._factor = factor
        self._h = _lowpass(factor, taps_per_side) * factor
        self._history = np.zeros(len(self._h) - 1, dtype=np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        stuffed = np.zeros(len(x) * self._factor, dtype=np.float32)
        stuffed[:: self._factor] = x
        buf = np.concatenate([self._history, stuffed])
        self._history = buf[len(buf) - len(self._history) :]
        return np.convolve(buf, self._h, "valid")


class _DownBy:
    """Streaming integer decimator; takes multiples of ``factor`` samples."""

    def __init__(self, factor: int, taps_per_side: int = _TAPS_PER_SIDE):
        self._factor = factor
        self._h = _lowpass(factor, taps_per_side)
        self._history = np.zeros(len(self._h) - 1, dtype=np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._history, x.astype(np.float32)])
        self._history = buf[len(buf) - len(self._history) :]
        return np.convolve(buf, self._h, "valid")[:: self._factor]


class _RNNoise:
    """One RNNoise state (per call: the network is recurrent)."""

    def __init__(self):
        # The ctypes bindings only, not pyrnnoise's file-processing front end.
        from pyrnnoise import rnnoise

        self._lib = rnnoise.lib
        self._state = rnnoise.create()
        self._out = np.zeros(_FRAME, dtype=np.float32)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def process(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """One 480-sample float32 frame on the int16 scale → (denoised copy, speech probability)."""
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        prob = self._lib.rnnoise_process_frame(
            self._state, self._out_ptr, frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        )
        return self._out.copy(), float(prob)

    def close(self) -> None:
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
            self._state = None


class NoiseSuppressor:
    """Streaming RNNoise for one call at ``rate`` (a divisor of 48 kHz): int16 in, int16 out.

    Output lags input by RNNoise's own 20 ms plus 1 ms of resampling; input that does not fill a
    10 ms frame waits for the next chunk, so a chunk may come back shorter (or empty).
    """

    def __init__(self, rate: int, *, attenuation_limit_db: float | None = None):
        if _MODEL_RATE % rate:
            raise ValueError(f"noise suppression needs a rate that divides 48000 Hz, not {rate}")
        self.rate = rate
        self._factor = _MODEL_RATE // rate
        self._up = _UpBy(self._factor) if self._factor > 1 else None
        self._down = _DownBy(self._factor) if self._factor > 1 else None
        self._rnnoise = _RNNoise()
        # The share of the unfiltered signal added back: the most the noise can be lowered.
        self._dry = 0.0 if attenuation_limit_db is None else 10 ** (-attenuation_limit_db / 20)
        self._pending = np.zeros(0, dtype=np.float32)
        self._dry_tail = np.zeros(_MODEL_DELAY, dtype=np.float32)
        self.speech_probability = 0.0

    def process(self, samples: np.ndarray) -> np.ndarray:
        x = samples.astype(np.float32)
        if self._up is not None:
            x = self._up.process(x)
        self._pending = np.concatenate([self._pending, x])
        whole = len(self._pending) // _FRAME * _FRAME
        if whole == 0:
            return np.zeros(0, dtype=np.int16)
        frames, self._pending = self._pending[:whole], self._pending[whole:]
        out = np.empty(whole, dtype=np.float32)
        for i in range(0, whole, _FRAME):
            frame = frames[i : i + _FRAME]
            wet, self.speech_probability = self._rnnoise.process(frame)
            out[i : i + _FRAME] = wet
        if self._dry:
            # The dry path is delayed as RNNoise delays the wet one, or the two would comb.
            dry = np.concatenate([self._dry_tail, frames])
            self._dry_tail = dry[-_MODEL_DELAY:]
            out += self._dry * dry[:whole]
        if self._down is not None:
            out = self._down.process(out)
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)

    def close(self) -> None:
        self._rnnoise.close()


class NoiseSuppressionFilter(BaseAudioFilter):
    """The per-call Pipecat input filter around a ``NoiseSuppressor``.

    Built per call (the transport params hold one instance) and started by the input transport
    with its sample rate. ``FilterEnableFrame`` turns it off and on mid-call.
    """

    def __init__(self, *, attenuation_limit_db: float | None = None):
        self._attenuation_limit_db = attenuation_limit_db
        self._suppressor: NoiseSuppressor | None = None
        self._enabled = True

    def __repr__(self) -> str:
        return f"RNNoise noise suppression (limit {self._attenuation_limit_db} dB)"

    async def start(self, sample_rate: int):
        self._suppressor = NoiseSuppressor(
            sample_rate, attenuation_limit_db=self._attenuation_limit_db
        )

    async def stop(self):
        if self._suppressor is not None:
            self._suppressor.close()
            self._suppressor = None

    async def process_frame(self, frame: FilterControlFrame):
        if isinstance(frame, FilterEnableFrame):
            self._enabled = frame.enable

    async def filter(self, audio: bytes) -> bytes:
        if not self._enabled or self._suppressor is None:
            return audio
        # ~1-2 ms of CPU per 20 ms chunk, run inline as the Silero VAD beside it is: this call's
        # audio waits for it either way, and a thread hand-off per chunk would add its own delay.
        return self._suppressor.process(np.frombuffer(audio, dtype=np.int16)).tobytes()


class InputAudioFilter(FrameProcessor):
    """Runs a Pipecat input audio filter on the caller's audio, right after the input transport.

    The agent's VAD is a processor of the pipeline, not the transport's own, so a filter placed
    here is ahead of the VAD and the STT for every ingress without each transport's params
    having to carry it. Started with the pipeline's input rate, stopped with the pipeline.
    """

    def __init__(self, audio_filter: BaseAudioFilter, **kwargs):
        super().__init__(**kwargs)
        self._filter = audio_filter
        self._started = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._filter.start(frame.audio_in_sample_rate)
            self._started = True
            logger.info(f"caller audio filter on: {self._filter} at {frame.audio_in_sample_rate} Hz")
        elif isinstance(frame, FilterControlFrame):
            await self._filter.process_frame(frame)
        elif isinstance(frame, InputAudioRawFrame) and direction is FrameDirection.DOWNSTREAM:
            frame.audio = await self._filter.filter(frame.audio)
            if not frame.audio:
                return  # held back until a whole model frame is in
        await self.push_frame(frame, direction)

    async def cleanup(self):
        await super().cleanup()
        if self._started:
            self._started = False
            await self._filter.stop()


def noise_suppression(config: NoiseSuppressionConfig) -> NoiseSuppressionFilter | None:
    """The call's RNNoise filter as its agent config asks for it, or None when it is off."""
    if not config.enabled:
        return None
    return NoiseSuppressionFilter(attenuation_limit_db=config.attenuation_limit_db)


def noise_filter(config: NoiseSuppressionConfig) -> InputAudioFilter | None:
    """The call's noise filter as a processor after the input, or None when it is off."""
    audio_filter = noise_suppression(config)
    if audio_filter is None:
        return None
    # Direct mode: one asyncio hand-off less per 20 ms frame.
    return InputAudioFilter(audio_filter, enable_direct_mode=True)
