"""The frames a responder sends the call controller: what to do after (or instead of) a reply.

Follow-ups (hang up, transfer, send digits) run once the line before them has been spoken: the
first ``BotStoppedSpeakingFrame`` after a ``BotStartedSpeakingFrame``, or after
``FOLLOW_UP_LIMIT_SECS`` if no audio came at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import DataFrame

FOLLOW_UP_LIMIT_SECS = 20.0  # a line that never produced audio must not leave the call hanging


@dataclass
class IntentFollowUpFrame(DataFrame):
    """Do what the agent's ``intent`` says comes after its reply (transfer, tool, digits).

    ``line``: the reply still to be said first, when an LLM tool chose the intent (a scripted
    responder has already said it)."""

    intent: str
    line: str = ""


@dataclass
class HangUpFrame(DataFrame):
    """The LLM's ``end_call`` tool: say ``goodbye``, then hang up."""

    goodbye: str = "Goodbye."


@dataclass
class SendDigitsFrame(DataFrame):
    """The LLM's ``send_digits`` tool: send keypad tones (already validated) to the far end."""

    digits: str
