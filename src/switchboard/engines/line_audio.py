"""``LineAudioFrame``: caller audio from an 8 kHz µ-law phone line, its µ-law bytes kept beside it.

The pipeline's audio is 16 kHz linear PCM (VAD and smart-turn want it, so the edge decodes and
upsamples each chunk once). An STT provider that takes µ-law (Deepgram: ``encoding=mulaw``,
``sample_rate=8000``) is better sent the line's bytes as they came: a quarter of the bytes, and
no resampling back down. A processor that changes the audio (the noise filter) assigns a new
``audio``, after which :meth:`line_ulaw` no longer vouches for the µ-law.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.frames.frames import InputAudioRawFrame


@dataclass
class LineAudioFrame(InputAudioRawFrame):
    """Caller audio decoded from a phone line, with the µ-law it was decoded from."""

    ulaw: bytes = b""
    _decoded: bytes = field(default=b"", init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        self._decoded = self.audio

    def line_ulaw(self) -> bytes | None:
        """The line's µ-law for this frame's audio, or None if the audio was changed since."""
        return self.ulaw if self.ulaw and self.audio is self._decoded else None
