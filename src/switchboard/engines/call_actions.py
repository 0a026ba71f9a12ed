"""The frame a responder sends the call controller: do this intent's follow-up.

Follow-ups (hang up, transfer, send digits) run once the line before them has been spoken: the
first ``BotStoppedSpeakingFrame`` after a ``BotStartedSpeakingFrame``, or after
``FOLLOW_UP_LIMIT_SECS`` if no audio came at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipecat.frames.frames import DataFrame

FOLLOW_UP_LIMIT_SECS = 20.0  # a line that never produced audio must not leave the call hanging

Action = Literal["transfer", "collect_digits", "end_call", "tool", "send_digits"]


@dataclass
class CallActionFrame(DataFrame):
    """From a responder: after this reply is spoken, do the intent's follow-up."""

    action: Action
    intent: str
    text: str = ""  # from an LLM tool: the line to say first (not yet spoken)
    digits: str = ""  # from the LLM's send_digits tool: the dial string
