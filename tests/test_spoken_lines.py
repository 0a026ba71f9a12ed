"""Who said what, read off a call's frames: transcripts, the agent's lines, barge-ins."""

from __future__ import annotations

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
)

from switchboard.spoken_lines import SpokenLines


def said(frames) -> list:
    lines = SpokenLines()
    return [s for f in frames if (s := lines.see(f)) is not None]


def test_caller_words_and_agent_lines_are_read_in_order() -> None:
    frames = [
        TTSSpeakFrame(text="Hello, how can I help?"),
        TranscriptionFrame(text=" what are your hours ", user_id="", timestamp=""),
        TranscriptionFrame(text="   ", user_id="", timestamp=""),
        LLMFullResponseStartFrame(),
        LLMTextFrame(text="We open "),
        LLMTextFrame(text="at nine."),
        LLMFullResponseEndFrame(),
    ]
    assert said(frames) == [
        ("agent", "Hello, how can I help?"),
        ("user", "what are your hours"),
        ("agent", "We open at nine."),
    ]


def test_one_barge_in_is_one_event_however_many_interruption_frames_carry_it() -> None:
    frames = [
        BotStartedSpeakingFrame(),
        InterruptionFrame(),
        InterruptionFrame(),  # the same barge-in, pushed again before the bot stopped
        BotStoppedSpeakingFrame(),
        InterruptionFrame(),  # the caller speaking over silence interrupts nothing
        BotStartedSpeakingFrame(),
        InterruptionFrame(),  # a second barge-in on a later reply
    ]
    assert said(frames) == [("interrupted", ""), ("interrupted", "")]
