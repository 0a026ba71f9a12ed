"""End-of-turn decision: smart-turn on the audio, with a second opinion from the transcript.

Smart-turn judges from prosody alone and often hears a short phone request ("Goodbye", a
sentence spoken in a flat voice) as unfinished; the turn then waits for the full silence
timeout. Whisper's sentence punctuation, and a transcript the agent can already answer, are
strong evidence that the caller is done, so either one also ends the turn. A caller who was
not done simply keeps talking: barge-in stops the reply and the next turn carries on.

Smart-turn runs only when the transcript leaves the turn undecided, and off the frame path:
Pipecat's strategy awaits the model at every VAD stop (~50 ms of CPU, far more when many calls
stop at once) before it even looks at the transcript, so every reply waited for a verdict it
mostly did not need, and every turn paid for it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
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
        self._verdict_task: asyncio.Task | None = None
        self._transcribed = asyncio.Event()

    async def hear(self, audio: bytes, is_speech: bool) -> None:
        """Caller audio from the call's media stage (media_stage=lean) instead of as frames.

        ``is_speech``: the VAD's state before this chunk, as the aggregator would have known it
        had the chunk come down the pipeline ahead of the VAD's event.
        """
        if self._turn_analyzer.append_audio(audio, is_speech) == EndOfTurnState.COMPLETE:
            # The silence timeout ran out. Pipecat's _handle_input_audio awaits the model here;
            # the stage's caller is the transport's receive loop, which must not wait for it.
            self.task_manager.create_task(self._silence_timed_out(), f"{self}::silence_timed_out")

    async def _silence_timed_out(self) -> None:
        _, prediction = await self._turn_analyzer.analyze_end_of_turn()
        await self._handle_prediction_result(prediction)
        self._turn_complete = True
        await self._maybe_trigger_user_turn_stopped()

    async def _handle_transcription(self, frame: TranscriptionFrame):
        await super()._handle_transcription(frame)
        self._transcribed.set()
        await self._second_opinion()

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        # Pipecat's own handler, with the smart-turn inference moved off the frame path.
        self._vad_user_speaking = False
        self._stop_secs = frame.stop_secs
        self._vad_stopped = True
        self._transcribed.clear()  # this segment's transcript is still to come
        stt_deadline = frame.timestamp - frame.stop_secs + self._stt_timeout
        self._timeout_task = self.task_manager.create_task(
            self._timeout_handler(max(0.0, stt_deadline - time.time())), f"{self}::_timeout_handler"
        )
        await self._second_opinion()
        if not self._turn_complete:
            self._verdict_task = self.task_manager.create_task(
                self._smart_turn_verdict(), f"{self}::_smart_turn_verdict"
            )

    async def _smart_turn_verdict(self) -> None:
        try:
            # The transcript usually lands within the STT's p99 of the stop and decides alone.
            try:
                await asyncio.wait_for(self._transcribed.wait(), self._stt_timeout or 0.5)
            except TimeoutError:
                pass
            if self._turn_complete or not self._vad_stopped:
                return
            state, prediction = await self._turn_analyzer.analyze_end_of_turn()
        finally:
            self._verdict_task = None
        await self._handle_prediction_result(prediction)
        if self._vad_stopped and not self._turn_complete and state == EndOfTurnState.COMPLETE:
            self._turn_complete = True
            await self._maybe_trigger_user_turn_stopped()

    async def _discard_pending_end_of_turn(self):
        if self._verdict_task is not None:
            await self.task_manager.cancel_task(self._verdict_task)
            self._verdict_task = None
        await super()._discard_pending_end_of_turn()

    async def cleanup(self):
        if self._verdict_task is not None:
            await self.task_manager.cancel_task(self._verdict_task)
            self._verdict_task = None
        await super().cleanup()

    async def _second_opinion(self) -> None:
        # Only between the caller's words, never while they are still speaking.
        if self._turn_complete or self._vad_user_speaking or not self._vad_stopped or not self._text:
            return
        if self._is_complete(self._text):
            self._turn_complete = True
            await self._maybe_trigger_user_turn_stopped()
