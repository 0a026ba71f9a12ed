"""Judging a scenario's call: the caller's measurements plus the agent's stored record, checked
against the scenario's expectations, each verdict in words a person understands.

What the agent heard, said and did (intents, key presses, digits, transfers, tools, who hung
up) is read from its stored record rather than guessed from audio; how fast it answered and
whether it stopped when talked over is what the caller measured. Record times and caller
times share a zero to within a few tens of ms (the stream's start), so each record entry is
given to the step during which it happened. The record's clock starts when the call is set up,
the caller's when its stream starts (up to a second later on a busy machine): both are aligned
on the greeting, which both see begin (:func:`clock_offset`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from switchboard.call_ids import call_id_for_twilio
from switchboard.loadtest.report import CallOutcome, CallResult, TurnResult
from switchboard.testing.results import Check, ScenarioResult, StepView
from switchboard.testing.scenario import ReplyExpect, Scenario, Step, ToolExpect

REDACTED_KEYS = "[KEYPAD]"  # what a record holds for keys when the agent redacts them
_EARLY_S = 0.3  # a record entry this much before a step's caller time still belongs to it
_VAD_TAIL_S = 1.0  # the agent may stop this long after the caller's speech ended, on its account
_FAILURE_WORDS = {
    "no_greeting": "the agent never greeted the caller",
    "no_reply": "the agent did not answer in time",
    "no_hangup": "the agent did not hang up",
    "reply_too_long": "the agent's reply never ended",
    "agent_closed_early": "the agent ended the call before the caller was done",
    "call_timeout": "the call ran past the scenario's time limit",
}


class LLMJudge:
    """Asks an OpenAI-compatible chat API whether a reply meets a criterion (PASS/FAIL + reason)."""

    def __init__(
        self, base_url: str, model: str = "gpt-4o-mini", api_key: str = "", timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):  # fmt: skip
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._transport = transport

    async def __call__(self, criterion: str, reply: str, transcript: str) -> tuple[bool, str]:
        return await self._ask(
            "You judge a phone agent's reply. Answer PASS or FAIL, then one short reason.\n"
            f"Criterion: {criterion}\nConversation so far:\n{transcript}\nThe agent's reply: {reply}"
        )

    async def whole_call(self, criterion: str, transcript: str) -> tuple[bool, str]:
        """Whether a whole conversation meets a criterion (a scenario's call-level ``judged``)."""
        return await self._ask(
            "You judge a phone call between an agent and a caller. Answer PASS or FAIL, then one short reason.\n"
            f"Criterion: {criterion}\nThe whole call:\n{transcript}"
        )

    async def _ask(self, prompt: str) -> tuple[bool, str]:
        body = {"model": self._model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 60}
        async with httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport) as client:
            response = await client.post(self._url, json=body, headers=self._headers)
        response.raise_for_status()
        answer = str(response.json()["choices"][0]["message"]["content"]).strip()
        return answer.upper().startswith("PASS"), answer


@dataclass
class _Window:
    """What the record says happened during one step (or, index -1, before the first one)."""

    heard: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    intents: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reply(self) -> str:
        return " ".join(self.said)


def answered_intents(events: list[dict[str, Any]]) -> list[str]:
    """Every intent that answered, in order: by what was said and by key presses alike."""
    return [e["intent"] for e in events if e.get("event") in ("intent", "keypad") and e.get("intent")]


def clock_offset(record: dict[str, Any], greeting_heard_s: float | None) -> float:
    """What to add to a record time to get the listener's time: the greeting's start as heard,
    less the record's time of the greeting line (0 when either is missing)."""
    first = next((float(e["t"]) for e in record.get("transcript") or [] if e.get("role") == "agent"), None)
    return 0.0 if first is None or greeting_heard_s is None else greeting_heard_s - first


def _windows(record: dict[str, Any], starts: list[float], offset: float = 0.0) -> tuple[_Window, list[_Window]]:
    greeting, steps = _Window(), [_Window() for _ in starts]

    def window(t: float) -> _Window:
        t += offset
        index = max((i for i, s in enumerate(starts) if t >= s - _EARLY_S), default=-1)
        return greeting if index < 0 else steps[index]

    for entry in record.get("transcript") or []:
        w = window(float(entry["t"]))
        (w.heard if entry["role"] == "user" else w.said).append(entry["text"])
    for event in record.get("events") or []:
        w = window(float(event.get("at_s", 0.0)))
        w.events.append(event)
        if event.get("event") == "tool_call":
            w.tools.append(event)
    for w in (greeting, *steps):
        w.intents = answered_intents(w.events)
    return greeting, steps


def _tool_check(expected: ToolExpect, calls: list[dict[str, Any]]) -> Check:
    what = f"tool {expected.name}"
    named = [c for c in calls if c.get("tool") == expected.name]
    if not named:
        called = ", ".join(sorted({str(c.get("tool")) for c in calls})) or "none"
        return Check(what=what, passed=False, detail=f"the agent did not call {expected.name} (tools called: {called})")
    for call in named:
        args = call.get("arguments") or {}
        if all(str(args.get(k)) == str(v) for k, v in expected.arguments.items()):
            return Check(what=what, passed=True, detail=f"called with {args}")
    return Check(what=what, passed=False, detail=f"called with {named[-1].get('arguments')}, expected {expected.arguments}")


def _said(text: str) -> str:
    return f'"{text}"' if text else "nothing"


async def _reply_checks(expect: ReplyExpect, w: _Window, transcript: str, judge: LLMJudge | None) -> list[Check]:
    checks: list[Check] = []
    reply = w.reply
    if expect.intent is not None:
        got = ", ".join(w.intents) or "no intent"
        checks.append(Check(
            what="intent", passed=expect.intent in w.intents,
            detail=f"expected the agent to answer with {expect.intent}; it answered with {got}",
        ))  # fmt: skip
    for words in expect.says:
        ok = words.lower() in reply.lower()
        checks.append(Check(what=f'says "{words}"', passed=ok, detail=f"the agent said {_said(reply)}"))
    if expect.matches is not None:
        ok = re.search(expect.matches, reply, re.IGNORECASE) is not None
        checks.append(Check(what=f"matches /{expect.matches}/", passed=ok, detail=f"the agent said {_said(reply)}"))
    if expect.judged is not None:
        checks.append(await _judged(expect.judged, reply, transcript, judge))
    if expect.transfer is not None:
        targets = [e.get("target") for e in w.events if e.get("event") == "transfer"]
        checks.append(Check(
            what=f"transfer to {expect.transfer}", passed=expect.transfer in targets,
            detail=f"transferred to {', '.join(map(str, targets))}" if targets else "the agent did not transfer the call",
        ))  # fmt: skip
    if expect.digits is not None:
        checks.append(_digits_check(expect.digits, [e.get("digits") for e in w.events if e.get("event") == "digits"]))
    if expect.tool is not None:
        checks.append(_tool_check(expect.tool, w.tools))
    return checks


def _digits_check(expected: str, got: list[Any]) -> Check:
    what = f"collects digits {expected}"
    if expected in got:
        return Check(what=what, passed=True, detail=f"collected {expected}")
    if REDACTED_KEYS in got:  # the agent keeps no keys in its records: only that it collected some
        return Check(what=what, passed=True, detail="collected digits; their value is redacted in the record (redaction.keypad_digits)")
    return Check(what=what, passed=False, detail=f"collected {', '.join(map(str, got))}" if got else "the agent collected no digits")


async def _judged(criterion: str, reply: str | None, transcript: str, judge: LLMJudge | None) -> Check:
    """A judged criterion: of one reply, or (``reply`` None) of the whole call."""
    what = f"judged: {criterion}"
    if judge is None:
        return Check(what=what, passed=False, detail="no LLM judge configured (give --judge-url)")
    try:
        ok, reason = await (judge(criterion, reply, transcript) if reply is not None else judge.whole_call(criterion, transcript))
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
        return Check(what=what, passed=False, detail=f"the LLM judge failed: {e}")
    return Check(what=what, passed=ok, detail=reason)


def _latency_check(step: Step, turn: TurnResult, budget: int | None) -> Check | None:
    limit = step.expect.max_latency_ms or budget
    if limit is None or step.silence_secs is not None:
        return None  # a re-prompt after a silence is timed by the agent's own timer
    if turn.voice_to_voice_ms is None:
        return Check(what="voice-to-voice", passed=False, detail="no reply was heard to time")
    ok = turn.voice_to_voice_ms <= limit
    return Check(
        what=f"voice-to-voice within {limit} ms", passed=ok,
        detail=f"{turn.voice_to_voice_ms:.0f} ms" + ("" if ok else f", {turn.voice_to_voice_ms - limit:.0f} ms over budget"),
    )  # fmt: skip


def _barge_in_check(turn: TurnResult) -> Check | None:
    if not turn.barge_in or turn.barge_in_ok is None:
        return None
    return Check(
        what="stops when talked over", passed=bool(turn.barge_in_ok),
        detail=f"the agent stopped {turn.agent_stopped_ms or 0:.0f} ms after the caller began talking over it",
    )  # fmt: skip


def false_barge_ins(result: CallResult, record: dict[str, Any], offset: float = 0.0) -> list[float]:
    """When the agent stopped talking (a ``clear`` the caller received, or an interruption in its
    record) while the caller was not speaking: a cough, echo or noise taken for the caller."""
    # A stop is the caller's doing from their first sound until the agent's answer begins, or,
    # unanswered, until the caller's next step (a slow stop is judged by "stops when talked
    # over", a missing answer by the step's own checks, not here).
    turns = sorted(result.turns, key=lambda t: t.caller_speech_start_s)
    nexts = ([t.caller_speech_start_s for t in turns[1:]] + [float("inf")])[: len(turns)]  # none for a call without turns
    speaking = [
        (t.caller_speech_start_s - _EARLY_S, max(t.caller_speech_end_s + _VAD_TAIL_S, t.agent_audio_start_s or after))
        for t, after in zip(turns, nexts, strict=True)
    ]
    stops = list(result.clear_times_s)
    stops += [float(e["at_s"]) + offset for e in record.get("events") or [] if e.get("event") == "interrupted"]
    return sorted({round(t, 2) for t in stops if not any(a <= t <= b for a, b in speaking)})


def _call_checks(scenario: Scenario, result: CallResult, record: dict[str, Any], offset: float) -> list[Check]:
    e = scenario.expect
    checks: list[Check] = []
    if result.outcome in (CallOutcome.FAILED, CallOutcome.REJECTED):
        reason = _FAILURE_WORDS.get(result.reason or "", result.reason or "unknown")
        checks.append(Check(what="the call runs to its end", passed=False, detail=reason))
    events = record.get("events") or []
    if e.intents is not None:
        got = answered_intents(events)
        checks.append(Check(
            what="intents in order", passed=got == e.intents,
            detail=f"expected {' → '.join(e.intents) or 'none'}; the agent answered {' → '.join(got) or 'none'}",
        ))  # fmt: skip
    if e.ended_by is not None:
        got = record.get("ended_by")
        checks.append(Check(what=f"ended by {e.ended_by}", passed=got == e.ended_by, detail=f"the call was ended by {got or 'nobody yet'}"))
    if e.transfer is not None:
        target = (record.get("transfer") or {}).get("target")
        checks.append(Check(
            what=f"transfer to {e.transfer}", passed=target == e.transfer,
            detail=f"transferred to {target}" if target else "the call was not transferred",
        ))  # fmt: skip
    if e.digits is not None:
        checks.append(_digits_check(e.digits, [ev.get("digits") for ev in events if ev.get("event") == "digits"]))
    calls = record.get("tool_calls") or [ev for ev in events if ev.get("event") == "tool_call"]
    checks += [_tool_check(t, calls) for t in e.tools]
    if e.no_false_barge_in:
        stops = false_barge_ins(result, record, offset)
        checks.append(Check(
            what="no false barge-in", passed=not stops,
            detail=("the agent stopped talking while the caller was silent at " + ", ".join(f"{t:.1f} s" for t in stops))
            if stops else "the agent only stopped when the caller spoke",
        ))  # fmt: skip
    return checks


def _actions(w: _Window) -> list[str]:
    out = []
    for ev in w.events:
        kind = ev.get("event")
        if kind == "keypad":
            out.append(f"key {ev.get('digit')} → {ev.get('intent') or 'not an option'}")
        elif kind == "digits":
            out.append(f"collected {ev.get('digits')}" + (" (timed out)" if ev.get("timed_out") else ""))
        elif kind == "transfer":
            out.append(f"transfer to {ev.get('target')} ({ev.get('mode')})")
        elif kind == "tool_call":
            out.append(f"tool {ev.get('tool')}({ev.get('arguments')})")
        elif kind in ("reprompt", "idle_hangup", "hang_up", "send_digits"):
            out.append(kind.replace("_", " ") + (f" by {ev['ended_by']}" if kind == "hang_up" else ""))
    return out


async def judge_call(
    scenario: Scenario, result: CallResult, record: dict[str, Any], judge: LLMJudge | None = None
) -> ScenarioResult:
    """The scenario's verdict from the call as the caller measured it and the agent recorded it."""
    turns = {t.index: t for t in result.turns}
    starts = [turns[i].caller_speech_start_s for i in sorted(turns)]
    offset = clock_offset(record, result.greeting.start_s if result.greeting else None)
    greeting, windows = _windows(record, starts, offset)
    transcript_lines: list[str] = []
    steps: list[StepView] = []
    for i, step in enumerate(scenario.steps):
        turn = turns.get(i)
        view = StepView(index=i, label=step.label, barge_in=step.barge_in_after_ms is not None)
        steps.append(view)
        if turn is None or i >= len(windows):
            view.checks.append(Check(what="step ran", passed=False, detail="the call had ended before this step"))
            continue
        w = windows[i]
        view.heard, view.replied, view.intents, view.actions = " ".join(w.heard), w.reply, w.intents, _actions(w)
        view.caller_heard = turn.transcript or ""
        view.caller_start_s, view.caller_end_s = turn.caller_speech_start_s, turn.caller_speech_end_s
        view.reply_start_s, view.latency_ms = turn.agent_audio_start_s, turn.voice_to_voice_ms
        transcript_lines += [f"caller: {view.heard or step.label}", f"agent: {w.reply}"]
        view.checks = await _reply_checks(step.expect, w, "\n".join(transcript_lines[:-1]), judge)
        for extra in (_latency_check(step, turn, scenario.expect.max_latency_ms), _barge_in_check(turn)):
            if extra is not None:
                view.checks.append(extra)
    checks = _call_checks(scenario, result, record, offset)
    whole = "\n".join([f"agent: {greeting.reply}", *transcript_lines])
    checks += [await _judged(criterion, None, whole, judge) for criterion in scenario.expect.judged]
    passed = all(c.passed for c in checks) and all(c.passed for s in steps for c in s.checks)
    return ScenarioResult(
        name=scenario.name,
        passed=passed,
        duration_s=round(result.duration_s, 1),
        call_id=record.get("call_id") or call_id_for_twilio(result.call_sid),
        outcome=result.outcome.value,
        greeting=greeting.reply,
        ended_by=record.get("ended_by"),
        steps=steps,
        checks=checks,
        recording=result.recording,
    )
