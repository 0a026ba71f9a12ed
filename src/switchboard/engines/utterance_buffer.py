"""The caller's current utterance as the STT provider received it, for the fallback to hear again.

A cloud STT that fails mid-utterance (its socket dropped, no final transcript) takes the words it
was given with it. The STT fallback switcher keeps the frames of the utterance in progress (the
VAD start, the audio since a short pre-roll before it, the VAD stop) until the provider's
transcript arrives, so that the local engine it falls back to can transcribe the whole utterance
and the turn still gets its reply.
"""

from __future__ import annotations

from collections import deque

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)

PRE_ROLL_FRAMES = 25  # ~0.5-1 s of audio before the VAD start (its start window and onset)
MAX_UTTERANCE_FRAMES = 3000  # ~60 s at 20 ms: a caller who never stops is not kept forever


class UtteranceBuffer:
    """Frames of the utterance an STT provider has not transcribed yet."""

    def __init__(self) -> None:
        self._pre_roll: deque[Frame] = deque(maxlen=PRE_ROLL_FRAMES)
        self._utterance: list[Frame] = []
        self._speaking = False

    def sent(self, frame: Frame) -> None:
        """A frame on its way to the provider."""
        if isinstance(frame, InputAudioRawFrame):
            if self._speaking or self._utterance:
                if len(self._utterance) < MAX_UTTERANCE_FRAMES:
                    self._utterance.append(frame)
            else:
                self._pre_roll.append(frame)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            if not self._utterance:
                self._utterance = [frame, *self._pre_roll]
                self._pre_roll.clear()
            self._speaking = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._speaking:
            self._utterance.append(frame)
            self._speaking = False

    def answered(self, frame: Frame) -> None:
        """A frame from the provider: a final transcript covers what was said so far."""
        if isinstance(frame, TranscriptionFrame) and not self._speaking:
            self._utterance.clear()

    def take(self) -> list[Frame]:
        """The untranscribed utterance, in order (emptied)."""
        frames, self._utterance = self._utterance, []
        return frames
