"""Dual-channel call recordings: caller left, agent right, 16 kHz FLAC.

The caller's audio arrives as one continuous real-time stream, so it is laid end to end. The
agent's audio is what the output transport actually sent (audio cut off by a barge-in is never
sent, so never recorded); each run of it is placed at the moment it was sent, on the same
clock as the caller's stream, so the gaps between the two channels are the call's real gaps
(to within one audio chunk, 10-40 ms).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr

RECORDING_RATE = 16000
_NEW_RUN_SECS = 0.25  # agent audio arriving this late after the previous chunk starts a new run


@dataclass
class _Run:
    start: float
    rate: int
    chunks: list[bytes] = field(default_factory=list)
    samples: int = 0


def _resampled(pcm: bytes, rate: int) -> np.ndarray:
    audio = np.frombuffer(pcm, dtype=np.int16)
    if rate == RECORDING_RATE or audio.size == 0:
        return audio
    return soxr.resample(audio, rate, RECORDING_RATE, quality="HQ").astype(np.int16)


class DualChannelRecorder:
    """Collects both sides' PCM as the call runs; ``encode()`` makes the FLAC at the end."""

    def __init__(self) -> None:
        self._caller: list[_Run] = []
        self._agent: list[_Run] = []

    def caller(self, pcm: bytes, rate: int, t: float) -> None:
        self._add(self._caller, pcm, rate, t, contiguous=True)

    def agent(self, pcm: bytes, rate: int, t: float) -> None:
        self._add(self._agent, pcm, rate, t, contiguous=False)

    @staticmethod
    def _add(runs: list[_Run], pcm: bytes, rate: int, t: float, *, contiguous: bool) -> None:
        last = runs[-1] if runs else None
        same_run = last is not None and last.rate == rate
        if same_run and not contiguous:
            assert last is not None
            # Chunks are pushed after they are sent, one chunk-length apart.
            same_run = t - (last.start + last.samples / rate) < _NEW_RUN_SECS
        if not same_run:
            last = _Run(start=t, rate=rate)
            runs.append(last)
        assert last is not None
        last.chunks.append(pcm)
        last.samples += len(pcm) // 2

    @property
    def empty(self) -> bool:
        return not (self._caller or self._agent)

    def encode(self) -> tuple[bytes, float]:
        """The stereo FLAC and its duration in seconds (blocking: run it off the event loop)."""
        starts = [r.start for r in self._caller + self._agent]
        t0 = min(starts) if starts else 0.0
        caller = self._lay_out(self._caller, t0, contiguous=True)
        agent = self._lay_out(self._agent, t0, contiguous=False)
        length = max(caller.size, agent.size, 1)
        stereo = np.zeros((length, 2), dtype=np.int16)
        stereo[: caller.size, 0] = caller
        stereo[: agent.size, 1] = agent
        buffer = io.BytesIO()
        sf.write(buffer, stereo, RECORDING_RATE, format="FLAC", subtype="PCM_16")
        return buffer.getvalue(), length / RECORDING_RATE

    @staticmethod
    def _lay_out(runs: list[_Run], t0: float, *, contiguous: bool) -> np.ndarray:
        pieces: list[np.ndarray] = []
        cursor = 0
        for run in runs:
            audio = _resampled(b"".join(run.chunks), run.rate)
            at = (
                cursor
                if contiguous and pieces
                else max(cursor, round((run.start - t0) * RECORDING_RATE))
            )
            if at > cursor:
                pieces.append(np.zeros(at - cursor, dtype=np.int16))
            pieces.append(audio)
            cursor = at + audio.size
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
