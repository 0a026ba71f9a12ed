"""Caller words in logs: DEBUG lines logged during a call pass through the PII detector.

At DEBUG the STT logs each transcript, the responder what the caller said, and Pipecat the
text it speaks (which may read back a patient number); INFO and above never carry a caller's
words. Log lines are process-wide, so every entity type is redacted whatever the agent's
settings; a number in a DEBUG line of a call (a port, a byte count) may be masked with them.
A log line is one utterance, and a caller pausing between the groups of a card number makes an
utterance of each ("3782"): in the lines that quote words, every number of three digits or more
is masked too (``[DIGITS]``), whatever it looks like alone.
"""

from __future__ import annotations

from typing import Any

from switchboard.privacy.spoken import normalise
from switchboard.privacy.text import redact_text

_DEBUG = 10
_PHONEMES = ", phonemes="
# The lines that quote what was said: the STT's transcript, the responder's match, the text
# Pipecat and Piper speak.
_QUOTING = ("transcript [", "caller said", "Generating TTS [", "text=")
_MASKED_DIGITS = 3


def _numbers_masked(text: str) -> str:
    for t in reversed(normalise(text)):
        if t.digits and len(t.text) >= _MASKED_DIGITS:
            text = text[: t.start] + "[DIGITS]" + text[t.end :]
    return text


# Protocol libraries: their DEBUG lines (frames, headers, packets) carry no words, and there
# are many of them (a media frame every 20 ms).
_PROTOCOL_LOGGERS = ("websockets", "uvicorn", "httpcore", "httpx", "aiortc", "aioice", "hpack")


def _of_a_call(record: Any) -> bool:
    name = record["name"] or ""
    if name.startswith(_PROTOCOL_LOGGERS):
        return False
    # Piper logs the text it speaks from its synthesis thread, outside the call's context.
    return "call_id" in record["extra"] or name.startswith("piper")


def redact_debug_record(record: Any) -> None:
    """A loguru patcher: a DEBUG (or TRACE) line of a call, redacted in place."""
    if record["level"].no > _DEBUG or not _of_a_call(record):
        return
    message = record["message"]
    if _PHONEMES in message:  # Piper spells the text out in phonemes too: that would say it all
        message = message.split(_PHONEMES)[0] + _PHONEMES + "[withheld]"
    try:
        message = redact_text(message)
        record["message"] = _numbers_masked(message) if any(q in message for q in _QUOTING) else message
    except Exception:  # a log line must never break the code logging it; none of it is shown
        record["message"] = "[log line withheld: redaction failed]"
