"""End-of-turn decision: smart-turn on the audio, with a second opinion from the transcript.

Smart-turn judges from prosody alone and often hears a short phone request ("Goodbye", a
sentence spoken in a flat voice) as unfinished; the turn then waits for the full silence
timeout. Whisper's sentence punctuation, and a transcript the agent can already answer, are
strong evidence that the caller is done, so either one also ends the turn. A caller who was
not done simply keeps talking: barge-in stops the reply and the next turn carries on.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pipecat.frames.frames import TranscriptionFrame, VADUserStoppedSpeakingFrame
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

_SENTENCE_END = re.compile(r"[.?!]\s*$")


_MIN_SENTENCE_WORDS = 3


def ends_a_sentence(text: str) -> bool:
    """A whole sentence: terminal punctuation after a few words ("Okay." alone is not one)."""
    return len(text.split()) >= _MIN_SENTENCE_WORDS and bool(_SENTENCE_END.search(text.strip()))


class TranscriptAwareTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart-turn stop strategy that also ends the turn when ``is_complete(transcript)``."""

    def __init__(self, *, is_complete: Callable[[str], bool], **kwargs):
        super().__init__(**kwargs)
        self._is_complete = is_complete

    async def _handle_transcription(self, frame: TranscriptionFrame):
        await super()._handle_transcription(frame)
        await self._second_opinion()

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        await super()._handle_vad_user_stopped_speaking(frame)
        await self._second_opinion()

    async def _second_opinion(self) -> None:
        # Only between the caller's words, never while they are still speaking.
        if self._turn_complete or self._vad_user_speaking or not self._vad_stopped or not self._text:
            return
        if self._is_complete(self._text):
            self._turn_complete = True
            await self._maybe_trigger_user_turn_stopped()
