"""A replayed call against its original, caller action by caller action: what the agent said,
which intents answered, what it did (transfers, digits, tools, keys) and how fast.

Each difference is classified: ``same``; ``worded differently`` (the same actions, other
words); ``different action`` (another intent, transfer, digit string, tool call or ending).
A call fails on a different action, or when its replies are slower than the original's by more
than the margin (the median over its replies, so one noisy turn does not fail it).
"""

from __future__ import annotations

import re
import statistics
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from switchboard.analysis.recording import RecordingAnalysis
from switchboard.call_ids import call_id_for_twilio
from switchboard.loadtest.report import CallResult
from switchboard.testing.judge import clock_offset

if TYPE_CHECKING:
    from switchboard.testing.replay import ReplayPlan

# "not answered": the replayed call never reached the agent (busy, a hold queue's end, a failed
# webhook), so there is nothing to compare; "error": the replay could not be run or read back.
Verdict = Literal["same", "worded differently", "different action", "not answered", "error"]
_RANK = {"same": 0, "worded differently": 1, "different action": 2, "not answered": 3, "error": 4}
_EARLY_S = 0.3


class ReplayTurn(BaseModel):
    """One caller action of the original call and what each build did after it."""

    index: int
    label: str
    verdict: Verdict
    notes: list[str] = Field(default_factory=list)
    original_heard: str = Field("", description="What the agent transcribed of the caller")
    new_heard: str = ""
    original_reply: str = ""
    new_reply: str = ""
    original_actions: list[str] = Field(default_factory=list)
    new_actions: list[str] = Field(default_factory=list)
    original_latency_ms: float | None = None
    new_latency_ms: float | None = None


class ReplayResult(BaseModel):
    """One replayed call: the verdict, the per-action diff and the latency comparison."""

    call_id: str
    new_call_id: str | None = None
    passed: bool
    verdict: Verdict
    notes: list[str] = Field(default_factory=list)
    turns: list[ReplayTurn] = Field(default_factory=list)
    original_ended_by: str | None = None
    new_ended_by: str | None = None
    latency_delta_ms: float | None = Field(None, description="Median over replies of new minus original")
    latency_regressed: bool = False
    duration_s: float = 0.0
    error: str | None = None


class ReplayRun(BaseModel):
    url: str
    against: str
    wall_s: float
    latency_margin_ms: float
    calls: list[ReplayResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.calls)


def _windows(record: dict[str, Any], starts: list[float], offset: float) -> list[dict[str, list]]:
    """Agent lines and events of each caller action's window (from its start to the next's)."""
    out: list[dict[str, list]] = [{"said": [], "heard": [], "events": []} for _ in starts]

    def index(t: float) -> int:
        t += offset
        return max((i for i, s in enumerate(starts) if t >= s - _EARLY_S), default=-1)

    for entry in record.get("transcript") or []:
        i = index(float(entry["t"]))
        if i >= 0:
            out[i]["said" if entry.get("role") == "agent" else "heard"].append(entry["text"])
    for event in record.get("events") or []:
        i = index(float(event.get("at_s", 0.0)))
        if i >= 0:
            out[i]["events"].append(event)
    return out


def actions_of(events: list[dict[str, Any]]) -> list[str]:
    """What the agent did, in comparable words: intents, transfers, digits, tools, tones sent."""
    out = []
    for e in events:
        kind = e.get("event")
        if kind == "intent":
            out.append(f"answered with {e.get('intent')}")
        elif kind in ("keypad", "keypad_ignored"):
            out.append(f"key {e.get('digit')} → {e.get('intent') or 'not an option'}")
        elif kind == "transfer":
            out.append(f"transfer to {e.get('target')} ({e.get('mode')})")
        elif kind == "digits":
            out.append(f"collected digits {e.get('digits')}")
        elif kind == "tool_call":
            out.append(f"tool {e.get('tool')} {sorted((e.get('arguments') or {}).items())}")
        elif kind == "send_digits":
            out.append(f"sent tones {e.get('digits')}")
        elif kind == "end_call":
            out.append("ends the call")
    return out


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _reply_delay(analysis: RecordingAnalysis | None, end_s: float) -> float | None:
    """From the caller's end of speech (snapped to the recording's own caller turn) to the first
    agent audio after it, on one recording's clock."""
    if analysis is None:
        return None
    nearest = min(analysis.caller_turns, key=lambda t: abs(t.end_s - end_s), default=None)
    if nearest is None or abs(nearest.end_s - end_s) > 1.0:
        return None
    start = next((s.start_s for s in analysis.agent_segments if s.start_s > nearest.end_s + 0.01), None)
    return None if start is None else round((start - nearest.end_s) * 1000, 1)


def compare_calls(
    call_id: str,
    record: dict[str, Any],
    plan: ReplayPlan,
    result: CallResult,
    new_record: dict[str, Any],
    new_analysis: RecordingAnalysis | None,
    margin_ms: float,
) -> ReplayResult:
    """The diff of a replay against its original, with its verdict."""
    turns_by_index = {t.index: t for t in result.turns}
    old_starts = [a.start_s for a in plan.actions]
    new_starts = [
        turns_by_index[i].caller_speech_start_s if i in turns_by_index else float("inf") for i in plan.action_turns
    ]
    to_sim = clock_offset(new_record, result.greeting.start_s if result.greeting else None)
    new_segments = new_analysis.agent_segments if new_analysis is not None else []
    to_flac = clock_offset(new_record, new_segments[0].start_s if new_segments else None)
    old_w, new_w = _windows(record, old_starts, plan.offset), _windows(new_record, new_starts, to_sim)
    turns: list[ReplayTurn] = []
    deltas: list[float] = []
    for k, action in enumerate(plan.actions):
        sim = turns_by_index.get(plan.action_turns[k])
        old_actions, new_actions = actions_of(old_w[k]["events"]), actions_of(new_w[k]["events"])
        old_reply, new_reply = " ".join(old_w[k]["said"]), " ".join(new_w[k]["said"])
        turn = ReplayTurn(
            index=k, label=action.label, verdict="same", original_reply=old_reply, new_reply=new_reply,
            original_actions=old_actions, new_actions=new_actions,
        )  # fmt: skip
        if sim is None:
            turn.verdict = "different action"
            turn.notes.append("the replayed call ended before the caller got here")
        elif old_actions != new_actions:
            turn.verdict = "different action"
            turn.notes.append(f"the agent: {'; '.join(new_actions) or 'did nothing'} (originally: {'; '.join(old_actions) or 'nothing'})")
        elif _words(old_reply) != _words(new_reply):
            turn.verdict = "worded differently"
            turn.notes.append(f'said "{new_reply}" instead of "{old_reply}"')
        turn.original_heard, turn.new_heard = " ".join(old_w[k]["heard"]), " ".join(new_w[k]["heard"])
        if sim is not None and _words(turn.original_heard) != _words(turn.new_heard):
            # The same audio heard otherwise: an STT change, or an unstable transcription.
            turn.notes.append(f'heard the caller as "{turn.new_heard}" instead of "{turn.original_heard}"')
        if action.clip is not None and sim is not None:
            # Spoken turns only: a key's reply runs on from the prompt it cut, with no silence
            # between them in the recording to time it by.
            turn.original_latency_ms = _reply_delay(plan.analysis, action.end_s)
            turn.new_latency_ms = _reply_delay(new_analysis, sim.caller_speech_end_s - to_sim + to_flac)
        if turn.original_latency_ms is not None and turn.new_latency_ms is not None:
            deltas.append(turn.new_latency_ms - turn.original_latency_ms)
        turns.append(turn)
    notes: list[str] = []
    verdict = max((t.verdict for t in turns), key=_RANK.__getitem__, default="same")
    old_end, new_end = record.get("ended_by"), new_record.get("ended_by")
    if old_end != new_end:
        verdict = "different action"
        notes.append(f"the call was ended by {new_end or 'nobody'} instead of {old_end or 'nobody'}")
    greeting_old = next((e["text"] for e in record.get("transcript") or [] if e.get("role") == "agent"), "")
    greeting_new = next((e["text"] for e in new_record.get("transcript") or [] if e.get("role") == "agent"), "")
    if _words(greeting_old) != _words(greeting_new):
        notes.append(f'the greeting is worded differently: "{greeting_new}"')
        verdict = max(verdict, "worded differently", key=_RANK.__getitem__)
    delta = round(statistics.median(deltas), 1) if deltas else None
    regressed = delta is not None and delta > margin_ms
    if regressed:
        notes.append(f"replies are {delta:.0f} ms slower than the original's (median over {len(deltas)}), beyond the {margin_ms:.0f} ms margin")
    return ReplayResult(
        call_id=call_id,
        new_call_id=new_record.get("call_id") or call_id_for_twilio(result.call_sid),
        passed=verdict != "different action" and not regressed,
        verdict=verdict,
        notes=notes + [f"step {t.index + 1} ({t.label}): {n}" for t in turns for n in t.notes],
        turns=turns,
        original_ended_by=old_end,
        new_ended_by=new_end,
        latency_delta_ms=delta,
        latency_regressed=regressed,
        duration_s=round(result.duration_s, 1),
    )
