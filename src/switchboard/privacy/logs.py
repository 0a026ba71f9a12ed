"""Caller words in logs: DEBUG lines logged during a call pass through the PII detector.

At DEBUG the STT logs each transcript, the responder what the caller said, and Pipecat the
text it speaks (which may read back a patient number); INFO and above never carry a caller's
words. Log lines are process-wide, so every entity type is redacted whatever the agent's
settings; a number in a DEBUG line of a call (a port, a byte count) may be masked with them.
"""

from __future__ import annotations

from typing import Any

from switchboard.privacy.text import redact_text

_DEBUG = 10
_PHONEMES = ", phonemes="


def _of_a_call(record: Any) -> bool:
    # Piper logs the text it speaks from its synthesis thread, outside the call's context.
    return "call_id" in record["extra"] or (record["name"] or "").startswith("piper")


def redact_debug_record(record: Any) -> None:
    """A loguru patcher: a DEBUG (or TRACE) line of a call, redacted in place."""
    if record["level"].no > _DEBUG or not _of_a_call(record):
        return
    message = record["message"]
    if _PHONEMES in message:  # Piper spells the text out in phonemes too: that would say it all
        message = message.split(_PHONEMES)[0] + _PHONEMES + "[withheld]"
    try:
        record["message"] = redact_text(message)
    except Exception:  # a log line must never break the code logging it; none of it is shown
        record["message"] = "[log line withheld: redaction failed]"
