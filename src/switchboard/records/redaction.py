"""Redacting a finished call for storage: its record's text and its recording, as its agent asks.

``redact_for_storage`` runs in the archive before the record is saved, so the database, the
recording store, the post-call webhook and the LLM's analysis (which read the saved record)
never see what it took out. It never fails a call: if redaction fails, the record is stored
with its transcript, digits, tool calls and recording withheld, counted in
``pii_redaction_failures_total`` and logged without any of its content.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from loguru import logger

from switchboard.agent.config import AgentConfig
from switchboard.call_log import DigitsCollected, KeypadIgnored, KeypadPress, ToolCall
from switchboard.observability import metrics
from switchboard.privacy.text import placeholder, redact_lines, redact_text
from switchboard.records.models import StoredCall, TranscriptEntry

KEYPAD = placeholder("keypad")


def keyed_digits(call: StoredCall, agent: AgentConfig) -> list[str]:
    """The digit strings the caller keyed that are PII (every one unless its intent says not)."""
    if not agent.redaction.keypad_digits:
        return []
    return [e.digits for e in call.events if isinstance(e, DigitsCollected) and _pii(agent, e.intent) and e.digits]


def _pii(agent: AgentConfig, intent: str) -> bool:
    found = agent.intent(intent)
    return found is None or found.collect_digits is None or found.collect_digits.pii


class CallRedaction:
    """One call's redaction: its entity types, the digits keyed, and what was found."""

    def __init__(self, call: StoredCall, agent: AgentConfig):
        self.agent = agent
        self.entities = list(agent.redaction.entities)
        self.known = keyed_digits(call, agent)
        self.found: Counter[str] = Counter()

    def text(self, text: str) -> str:
        return redact_text(text, self.entities, self.known, self.found)

    def lines(self, lines: list[str]) -> list[str]:
        return redact_lines(lines, self.entities, self.known, self.found)

    def _transcript(self, entries: list[TranscriptEntry]) -> list[TranscriptEntry]:
        """Each side's lines redacted together (a number said across turns is one number)."""
        out = list(entries)
        for role in ("user", "agent"):
            index = [i for i, e in enumerate(entries) if e.role == role]
            for i, text in zip(index, self.lines([entries[i].text for i in index]), strict=True):
                out[i] = entries[i].model_copy(update={"text": text})
        return out

    def value(self, value: Any) -> Any:
        """A tool call's arguments or result, string by string."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool) and (len(str(value)) >= 5 or any(k in str(value) for k in self.known)):
            self.found["account_number"] += 1
            return placeholder("account_number")
        return value

    def event(self, event: Any) -> Any:
        keypad = self.agent.redaction.keypad_digits
        if isinstance(event, KeypadPress | KeypadIgnored) and keypad and event.digit != KEYPAD:
            self.found["keypad"] += 1
            return event.model_copy(update={"digit": KEYPAD})
        if isinstance(event, DigitsCollected) and keypad and _pii(self.agent, event.intent) and event.digits != KEYPAD:
            self.found["keypad"] += 1
            return event.model_copy(update={"digits": KEYPAD})
        if isinstance(event, ToolCall):
            return event.model_copy(update={"arguments": self.value(event.arguments), "result": self.value(event.result)})
        return event

    def call(self, call: StoredCall) -> StoredCall:
        update: dict[str, Any] = {
            "transcript": self._transcript(call.transcript),
            "turns": [
                t.model_copy(update={"transcript": text})
                for t, text in zip(call.turns, self.lines([t.transcript for t in call.turns]), strict=True)
            ],
            "events": [self.event(e) for e in call.events],
            "tool_calls": [self.event(t) for t in call.tool_calls],
        }
        if call.analysis is not None:
            analysis = call.analysis
            update["analysis"] = analysis.model_copy(
                update={
                    "summary": self.text(analysis.summary) if analysis.summary else analysis.summary,
                    "reasons": self.text(analysis.reasons) if analysis.reasons else analysis.reasons,
                }
            )
        return call.model_copy(update=update)


def redact_call(call: StoredCall, agent: AgentConfig) -> tuple[StoredCall, Counter[str]]:
    """The record with the agent's PII types and keyed digits taken out, and what was found."""
    redaction = CallRedaction(call, agent)
    return redaction.call(call), redaction.found


def withheld(call: StoredCall) -> StoredCall:
    """What is kept of a call whose redaction failed: who, when and how it went; none of its words."""
    return call.model_copy(
        update={
            "transcript": [],
            "turns": [t.model_copy(update={"transcript": ""}) for t in call.turns],
            "events": [e for e in call.events if not isinstance(e, KeypadPress | KeypadIgnored | DigitsCollected | ToolCall)],
            "tool_calls": [],
            "analysis": None,
            "recording": None,
        }
    )


# Re-transcribing recordings is seconds of CPU per call: one thread per process, so calls
# queue for it instead of taking cores from live calls.
_AUDIO = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pii-audio")


def _redact_audio(audio: bytes, agent: AgentConfig, known: list[str]) -> tuple[bytes, int]:
    from switchboard.records.recording_redaction import redact_recording

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
