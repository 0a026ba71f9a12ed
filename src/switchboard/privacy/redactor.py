"""``redact_for_storage``: a finished call's record and recording as the agent lets them be kept.

It runs in the archive before the record is saved, so the database, the recording store, the
post-call webhook and the LLM's analysis (which read the saved record) never see what it took
out. It never fails a call: if redaction fails, the record is stored with its transcript,
digits, tool calls and recording withheld, counted in ``pii_redaction_failures_total`` and
logged without any of its content.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from loguru import logger

from switchboard.agent.config import AgentConfig
from switchboard.observability import metrics
from switchboard.privacy.redact import keyed_digits, redact_call, withheld
from switchboard.records.models import StoredCall

# Re-transcribing recordings is seconds of CPU per call: one thread per process, so calls
# queue for it instead of taking cores from live calls.
_AUDIO = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pii-audio")


def _redact_audio(audio: bytes, agent: AgentConfig, known: list[str]) -> tuple[bytes, int]:
    from switchboard.privacy.audio import redact_recording

    redacted, spans = redact_recording(
        audio,
        list(agent.redaction.entities),
        known,
        keypad_tones=agent.redaction.keypad_digits,
        how=agent.redaction.audio_mask,
    )
    return redacted, len(spans)


@dataclass
class Redacted:
    """A call as it may be kept, and what was taken out of it."""

    call: StoredCall
    audio: bytes | None
    found: Counter[str]
    audio_spans: int = 0


async def redact(call: StoredCall, audio: bytes | None, agent: AgentConfig) -> Redacted:
    """The call and its recording with the agent's PII types taken out (raises on failure)."""
    redacted, found = redact_call(call, agent)
    spans = 0
    if audio is not None and agent.redaction.recording:
        loop = asyncio.get_running_loop()
        audio, spans = await loop.run_in_executor(_AUDIO, _redact_audio, audio, agent, keyed_digits(call, agent))
        if redacted.recording is not None:
            redacted.recording.bytes = len(audio)
    return Redacted(redacted, audio, found, spans)


async def redact_for_storage(
    call: StoredCall, audio: bytes | None, agent: AgentConfig
) -> tuple[StoredCall, bytes | None]:
    """The call (and its audio) with the agent's PII taken out; unchanged if redaction is off.
    Never raises: a failure withholds the call's words and recording instead."""
    if not agent.redaction.enabled:
        return call, audio
    try:
        done = await redact(call, audio, agent)
    except Exception as e:  # redaction must never cost the call its record: keep it, without words
        metrics.PII_REDACTION_FAILURES.inc()
        logger.error(f"{call.call_id}: redaction failed ({type(e).__name__}); transcript and recording withheld")
        return withheld(call), None
    for kind, count in done.found.items():
        metrics.PII_REDACTED.labels(entity=kind).inc(count)
    metrics.PII_AUDIO_SPANS.inc(done.audio_spans)
    if done.found or done.audio_spans:
        counts = ", ".join(f"{k} {n}" for k, n in sorted(done.found.items()))
        logger.info(
            f"{call.call_id}: redacted {sum(done.found.values())} PII span(s) of text"
            + (f" ({counts})" if counts else "")
            + f" and {done.audio_spans} of audio"
        )
    return done.call, done.audio
