"""Who said what on a call, read off the frames its pipeline pushes.

The caller's transcripts, the agent's lines (spoken whole, or streamed by an LLM and joined)
and the moments the caller talked over the agent: what the browser is told live and what the
call record keeps, from one reading of the frames.
"""

from __future__ import annotations

from typing import Literal

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
)

Said = tuple[Literal["user", "agent", "interrupted"], str]


class SpokenLines:
    """Feed it every frame once (``see``); it answers when a line was said or cut off."""

    FRAMES = (
        TranscriptionFrame,
        TTSSpeakFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
        LLMFullResponseEndFrame,
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        InterruptionFrame,
    )

    def __init__(self) -> None:
        self._reply: list[str] | None = None
        self._bot_speaking = False

    def see(self, frame: Frame) -> Said | None:
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            return "user", frame.text.strip()
        if isinstance(frame, TTSSpeakFrame):
            return "agent", frame.text
        if isinstance(frame, LLMFullResponseStartFrame):
            self._reply = []
        elif isinstance(frame, LLMTextFrame) and self._reply is not None:
            self._reply.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame) and self._reply is not None:
            text, self._reply = "".join(self._reply).strip(), None
            if text:
                return "agent", text
        elif isinstance(frame, BotStartedSpeakingFrame | BotStoppedSpeakingFrame):
            self._bot_speaking = isinstance(frame, BotStartedSpeakingFrame)
        elif isinstance(frame, InterruptionFrame) and self._bot_speaking:
            # One barge-in, one event: Pipecat may push more than one InterruptionFrame for it
            # before the output transport reports the bot stopped.
            self._bot_speaking = False
            return "interrupted", ""
        return None
