"""The calls of this worker process: what happened on each, kept in memory for inspection.

A :class:`CallRecord` is the worker's view of a call's log (``switchboard.call_log``): ids,
outcome and timing of its own, everything else (events, turns, intents, transfer, who ended
it) read from the log, so it never disagrees with the stored record.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from switchboard.call_log import CallLog, Turn
from switchboard.privacy.config import RedactionConfig
from switchboard.privacy.text import placeholder, redact_lines


@dataclass
class CallRecord:
    """What happened on one call, kept in memory for inspection and benchmarks."""

    call_sid: str
    stream_sid: str
    call_id: str = ""
    ingress: str = ""
    agent: str = ""
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    outcome: str = "active"
    failure_reason: str | None = None
    marks_played: list[str] = field(default_factory=list)
    log: CallLog = field(default_factory=CallLog)
    # The answering agent's redaction (when on), and the intents whose collected digits it keeps:
    # the worker's view of a call holds no more PII than its stored record.
    redaction: RedactionConfig | None = None
    digits_kept_for: frozenset[str] = frozenset()

    @property
    def intents(self) -> list[str]:
        return self.log.intents()

    @property
    def turns(self) -> list[Turn]:
        return self.log.turns()

    @property
    def events(self) -> list[dict[str, Any]]:
        """Call-control events in order: re-prompts, keypad, digit strings, transfers, tools."""
        return self.log.control_events()

    @property
    def transfer(self) -> dict[str, Any] | None:
        summary = self.log.transfer()
        return summary.model_dump(exclude_none=True) if summary else None

    @property
    def ended_by(self) -> str:
        """agent | caller | idle | max_duration | transfer | worker | error ('' while active)."""
        return self.log.ended_by or ""

    def view(self) -> dict[str, Any]:
        """The record as the worker's ``GET /calls`` serves it."""
        return {
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "call_id": self.call_id,
            "ingress": self.ingress,
            "agent": self.agent,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "outcome": self.outcome,
            "failure_reason": self.failure_reason,
            "intents": self.intents,
            "turns": self._redacted_turns([t.model_dump(exclude={"event", "at_s"}) for t in self.turns]),
            "marks_played": list(self.marks_played),
            "events": [self._redacted_event(e) for e in self.events],
            "ended_by": self.ended_by,
            "transfer": self.transfer,
        }


    def _redacted_turns(self, turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.redaction is not None:
            texts = redact_lines([t["transcript"] for t in turns], self.redaction.entities)
            for turn, text in zip(turns, texts, strict=True):
                turn["transcript"] = text
        return turns

    def _redacted_event(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.redaction is None or not self.redaction.keypad_digits:
            return event
        if event.get("event") == "digits" and event.get("intent") in self.digits_kept_for:
            return event
        return {k: placeholder("keypad") if k in ("digit", "digits") and event.get("event") != "send_digits" else v
                for k, v in event.items()}  # fmt: skip


class RecentCalls:
    """Live and recently finished calls of this process (bounded)."""

    def __init__(self, keep: int = 200):
        self._records: OrderedDict[str, CallRecord] = OrderedDict()
        self._keep = keep

    def add(self, record: CallRecord) -> None:
        self._records[record.call_sid] = record
        while len(self._records) > self._keep:
            self._records.popitem(last=False)

    def get(self, key: str) -> CallRecord | None:
        """A call by Twilio CallSid or Switchboard call id."""
        if key in self._records:
            return self._records[key]
        return next((r for r in self._records.values() if r.call_id == key), None)

    def recent(self) -> list[CallRecord]:
        return list(reversed(self._records.values()))

    @property
    def active(self) -> int:
        return sum(1 for r in self._records.values() if r.outcome == "active")
