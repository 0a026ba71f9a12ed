"""Redacting text and a stored call's record: PII replaced by its type (``[CARD]``, ``[KEYPAD]``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from switchboard.agent.config import AgentConfig
from switchboard.call.log import DigitsCollected, KeypadIgnored, KeypadPress, ToolCall
from switchboard.privacy.detect import detect
from switchboard.records.models import StoredCall

KEYPAD = "[KEYPAD]"


def placeholder(kind: str) -> str:
    return f"[{kind.upper()}]"


def redact_text(
    text: str, entities: Iterable[str], known_digits: Iterable[str] = (), found: Counter | None = None
) -> str:
    """``text`` with each PII span replaced by its placeholder; ``found`` counts them by type."""
    spans = detect(text, entities, known_digits)
    for e in reversed(spans):
        text = text[: e.start] + placeholder(e.type) + text[e.end :]
        if found is not None:
            found[e.type] += 1
    return text


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
            "transcript": [e.model_copy(update={"text": self.text(e.text)}) for e in call.transcript],
            "turns": [t.model_copy(update={"transcript": self.text(t.transcript)}) for t in call.turns],
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
