"""The calls of this worker process: what happened on each, kept in memory for inspection."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


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
    intents: list[str] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)
    marks_played: list[str] = field(default_factory=list)
    # Call-control events in order: re-prompts, keypad presses, digit strings, hang-up, transfer.
    events: list[dict[str, Any]] = field(default_factory=list)
    ended_by: str = ""  # agent | caller | idle | max_duration | transfer ('' while active)
    transfer: dict[str, Any] | None = None


class CallRegistry:
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
