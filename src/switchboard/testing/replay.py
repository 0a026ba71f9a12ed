"""Replay: a recorded call's caller, played against a build as they really spoke, and the diff.

The caller's channel of the stored recording is cut into utterances (the energy definition of
``switchboard.analysis``); key presses come from the call's record. Each caller action is timed
against the agent the way the original caller was: after the same pause once the agent's
reply has ended, or, when the caller talked over the agent, the same time into the reply. The
agent's lines between two caller actions (a reply, then a re-prompt) are waited for as the
original caller waited for them. The new call's record is then compared with the original's,
action by action.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from switchboard.analysis.recording import RecordingAnalysis, analyze_channels
from switchboard.audio import write_wav
from switchboard.errors import SwitchboardError
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, CallResult
from switchboard.testing.calls_client import CallsAPIError, CallsClient
from switchboard.testing.diff import ReplayResult, ReplayRun, compare_calls
from switchboard.testing.judge import REDACTED_KEYS, clock_offset

_LEAD_S = 0.2  # room tone kept before an utterance (soft onsets sit below the energy threshold)
_TAIL_S = 0.3
_KEY_GAP_MS = 250  # between two keys of a collected digit string (the record keeps only the string)
_WAIT_FOR_AGENT_MS = 60_000  # a re-prompt or transfer line the original caller waited for
_AGENT_ENDS = ("agent", "idle", "transfer", "max_duration")


class Refused(SwitchboardError):
    """A call that cannot be replayed; the message says what it lacks."""


@dataclass(frozen=True)
class ReplayOptions:
    url: str = "http://127.0.0.1:8080"
    against: str = "http://127.0.0.1:8080"
    api_key: str = ""
    auth_token: str | None = None
    parallel: int = 2
    latency_margin_ms: float = 250.0
    out_dir: Path | None = None
    to_number: str | None = None  # dial another agent than the original call reached
    twilio_api: str | None = None  # the Twilio emulator the agent transfers through (followed)


@dataclass
class CallerAction:
    """One thing the original caller did, on the recording's clock."""

    start_s: float
    end_s: float
    clip: np.ndarray | None = None  # speech, 16 kHz
    keys: str | None = None

    @property
    def label(self) -> str:
        return f"presses {self.keys}" if self.keys else f"speaks {self.end_s - self.start_s:.1f} s"


@dataclass
class ReplayPlan:
    """The caller's script, and which of its turns are the original caller's own actions."""

    script: CallScript
    actions: list[CallerAction]
    action_turns: list[int] = field(default_factory=list)  # script turn index of each action
    analysis: RecordingAnalysis | None = None
    offset: float = 0.0  # record time + offset = the recording's time
    clips_dir: Path | None = None  # the caller's utterances, removed once replayed


def _stereo(call_id: str, audio: bytes) -> tuple[np.ndarray, int]:
    try:
        data, rate = sf.read(io.BytesIO(audio), dtype="int16", always_2d=True)
    except (RuntimeError, ValueError) as e:
        raise Refused(f"{call_id}: the recording cannot be read: {e}") from e
    if data.shape[1] < 2:
        raise Refused(f"{call_id}: the recording has one channel; replay needs the caller's own channel (stereo: caller left)")
    return data, int(rate)


def _key_actions(record: dict[str, Any], offset: float) -> list[CallerAction]:
    """Key presses from the record: menu keys one by one, collected digits as one string."""
    out = []
    for e in record.get("events") or []:
        if REDACTED_KEYS in (str(e.get("digit", "")), str(e.get("digits", ""))):
            raise Refused(
                "the caller's key presses are redacted in the record (the agent's redaction.keypad_digits): "
                "the keys cannot be replayed"
            )
        at = float(e.get("at_s", 0.0)) + offset
        if e.get("event") in ("keypad", "keypad_ignored"):
            out.append(CallerAction(at, at, keys=str(e["digit"])))
        elif e.get("event") == "digits":
            # Only the string is kept: its keys are re-typed at a typical pace, ending with the
            # terminator unless the collection timed out (a max_digits end types one key too many).
            keys = str(e.get("digits", "")) + ("" if e.get("timed_out") else "#")
            if keys:
                start = at - (len(keys) - 1) * _KEY_GAP_MS / 1000
                out.append(CallerAction(start, at, keys=keys))
    return out


def _agent_lines(record: dict[str, Any], offset: float) -> list[float]:
    return [float(e["t"]) + offset for e in record.get("transcript") or [] if e.get("role") == "agent"]


def plan_replay(call_id: str, record: dict[str, Any], audio: bytes, reply_timeout_ms: int = 10_000) -> ReplayPlan:
    """The script that replays a recorded call's caller; Refused when the call lacks what it needs."""
    if not record.get("transcript"):
        raise Refused(f"{call_id}: the record has no timings (a timed transcript): cannot time a replay")
    data, rate = _stereo(call_id, audio)
    analysis = analyze_channels(data[:, 0], data[:, 1], rate)
    speech = [
        CallerAction(t.start_s, t.end_s, clip=data[max(0, int((t.start_s - _LEAD_S) * rate)) : int((t.end_s + _TAIL_S) * rate), 0])
        for t in analysis.caller_turns
    ]
    segments = analysis.agent_segments
    offset = clock_offset(record, segments[0].start_s if segments else None)
    lines = _agent_lines(record, offset)
    try:
        keys = _key_actions(record, offset)
    except Refused as e:
        raise Refused(f"{call_id}: {e}") from None
    actions = _unanswered_joined(sorted(speech + keys, key=lambda a: a.start_s), lines, data[:, 0], rate)
    if not actions and len(lines) < 2:
        raise Refused(f"{call_id}: the caller neither spoke nor pressed a key, and the agent only greeted: nothing to replay")
    turns: list[CallerTurn] = []
    work = Path(tempfile.mkdtemp(prefix="switchboard-replay-"))  # owner-only: the caller's voice
    plan = ReplayPlan(CallScript(), actions, analysis=analysis, offset=offset, clips_dir=work)
    previous_start = 0.0
    for k, action in enumerate(actions):
        heard = [t for t in lines if previous_start <= t < action.start_s]
        # The simulator waits for one reply per turn by itself; further lines (a re-prompt, a
        # transfer's failure) the original caller sat through are waited for as silent turns.
        turns += [CallerTurn(pause_before_ms=0, reply_timeout_ms=_WAIT_FOR_AGENT_MS) for _ in heard[1:]]
        plan.action_turns.append(len(turns))
        turns.append(_turn(action, heard[-1] if heard else None, segments, work, f"{k:02d}", rate))
        previous_start = action.start_s
    after = [t for t in lines if t >= previous_start]
    turns += [CallerTurn(pause_before_ms=0, reply_timeout_ms=_WAIT_FOR_AGENT_MS) for _ in after[1:]]
    if turns and record.get("ended_by") in _AGENT_ENDS:  # (a silent caller: re-prompts, a goodbye)
        turns[-1] = turns[-1].model_copy(update={"hangup_expected": True})
    plan.script = CallScript(
        turns=turns,
        from_number=record.get("from_number") or CallScript().from_number,
        to_number=record.get("to_number") or CallScript().to_number,
        reply_timeout_ms=reply_timeout_ms,
        agent_done_silence_ms=600,
        hangup_timeout_ms=_WAIT_FOR_AGENT_MS,
        greeting_timeout_ms=15_000,
    )
    return plan


def _unanswered_joined(actions: list[CallerAction], lines: list[float], caller: np.ndarray, rate: int) -> list[CallerAction]:
    """Join an action to the one before when the agent said nothing between them (keys typed
    on, speech resumed): the simulator expects an answer to every turn."""
    out: list[CallerAction] = []
    for action in actions:
        last = out[-1] if out else None
        answered = last is None or any(last.start_s <= t < action.start_s for t in lines)
        if answered or (last.keys is None) != (action.keys is None):
            out.append(action)
        elif action.keys is not None:
            last.keys, last.end_s = (last.keys or "") + action.keys, action.end_s
        else:
            last.end_s = action.end_s
            last.clip = caller[max(0, int((last.start_s - _LEAD_S) * rate)) : int((action.end_s + _TAIL_S) * rate)]
    return out


def _turn(action: CallerAction, line_t: float | None, segments, work: Path, name: str, rate: int) -> CallerTurn:
    """One caller action, timed against the agent line it followed (or talked over)."""
    begins = action.start_s - (_LEAD_S if action.clip is not None else 0.0)
    barge_in_ms = pause_ms = None
    if line_t is not None:
        onset = next((s.start_s for s in segments if s.end_s > line_t - 0.1), line_t)
        talking = any(s.start_s < begins < s.end_s - 0.05 for s in segments if s.end_s > onset)
        if talking:
            barge_in_ms = max(0, round((begins - onset) * 1000))
        else:
            ended = max((s.end_s for s in segments if s.end_s <= begins), default=onset)
            pause_ms = max(0, round((begins - ended) * 1000))
    if action.clip is None:
        return CallerTurn(dtmf=action.keys, dtmf_gap_ms=_KEY_GAP_MS, pause_before_ms=pause_ms or 0, barge_in_after_ms=barge_in_ms)
    path = work / f"utterance-{name}.wav"
    write_wav(path, action.clip, rate)
    return CallerTurn(
        audio=path,
        pause_before_ms=pause_ms or 0,
        barge_in_after_ms=barge_in_ms,
        speech_end_s=round(action.end_s - begins, 3),
    )


async def replay_one(call_id: str, options: ReplayOptions, source: CallsClient, target: CallsClient) -> ReplayResult:
    """Replay one stored call against ``options.against`` and diff it with the original."""
    started = time.monotonic()
    try:
        record = await source.record(call_id)
        if record is None:
            raise Refused(f"{call_id}: no such call at {source.base_url}")
        if not record.get("recording"):
            raise Refused(f"{call_id}: the call was not recorded (recording is opt-in per agent: `recording: enabled: true`)")
        audio = await source.recording(call_id)
        if audio is None:
            raise Refused(f"{call_id}: the recording is gone (deleted, or past its retention)")
        plan = await asyncio.to_thread(plan_replay, call_id, record, audio)
        if options.to_number:
            plan.script = plan.script.model_copy(update={"to_number": options.to_number})
        try:
            result = await run_call(
                options.against, plan.script, auth_token=options.auth_token, transcribe=False, max_call_s=600,
                twilio_api=options.twilio_api,
            )  # fmt: skip
        finally:
            if plan.clips_dir is not None:
                shutil.rmtree(plan.clips_dir, ignore_errors=True)
        if not result.stream_sid:
            return ReplayResult(
                call_id=call_id, passed=False, verdict="not answered", error=f"{call_id}: {not_answered(result)}",
                duration_s=round(result.duration_s, 1),
            )  # fmt: skip
        new_record = await target.finished_record(result.call_sid)
        new_audio = await target.recording(new_record["call_id"]) if new_record.get("recording") else None
        new_analysis = await asyncio.to_thread(_analysis_of, new_audio) if new_audio else None
        diff = compare_calls(call_id, record, plan, result, new_record, new_analysis, options.latency_margin_ms)
        if result.outcome is CallOutcome.FAILED and result.reason:
            diff.notes.insert(0, f"the replayed call failed on the caller's side: {result.reason}")
        return diff
    except (Refused, CallsAPIError, OSError, ValueError) as e:
        return ReplayResult(call_id=call_id, passed=False, verdict="error", error=str(e), duration_s=round(time.monotonic() - started, 1))


def not_answered(result: CallResult) -> str:
    """Why a replayed call never reached the agent (no media stream), in words."""
    waited = ""
    if result.hold is not None and result.hold.left_at_s is not None:
        waited = f" after {result.hold.left_at_s - result.hold.queued_at_s:.0f} s in the hold queue"
    reason = result.reason or "no media stream"
    if result.outcome is CallOutcome.REJECTED:
        said = reason.removeprefix("twiml: ")
        return f'not answered: busy{waited} (the stack said "{said}" and hung up)'
    if result.outcome is CallOutcome.TRANSFERRED:
        return f"not answered by the agent{waited}: {reason}"
    return f"not answered{waited}: {reason}"


def _analysis_of(audio: bytes) -> RecordingAnalysis | None:
    data, rate = sf.read(io.BytesIO(audio), dtype="int16", always_2d=True)
    return analyze_channels(data[:, 0], data[:, 1], int(rate)) if data.shape[1] >= 2 else None


async def recorded_history(calls: CallsClient, n: int) -> list[str]:
    """The newest ``n`` calls of the history that have a recording."""
    found: list[str] = []
    for call in await calls.recent(min(500, max(n * 3, 50))):
        if call.get("recording"):
            found.append(call["call_id"])
        if len(found) == n:
            break
    return found


async def replay_calls(
    call_ids: list[str], from_history: int | None, options: ReplayOptions, progress: Callable[[str], None] | None = None
) -> ReplayRun:
    """Replay the given calls (and the newest ``from_history`` recorded ones), a few at a time."""
    started = time.monotonic()
    source, target = CallsClient(options.url, options.api_key), CallsClient(options.against, options.api_key)
    try:
        ids = list(call_ids)
        if from_history:
            ids += [c for c in await recorded_history(source, from_history) if c not in ids]
        gate = asyncio.Semaphore(max(1, options.parallel))

        async def one(call_id: str) -> ReplayResult:
            async with gate:
                result = await replay_one(call_id, options, source, target)
            if progress is not None:
                progress(f"{result.verdict.upper():<20} {call_id}" + (f": {result.error}" if result.error else ""))
            return result

        results = await asyncio.gather(*(one(c) for c in ids))
    finally:
        await source.close()
        await target.close()
    return ReplayRun(
        url=options.url, against=options.against, wall_s=round(time.monotonic() - started, 1),
        latency_margin_ms=options.latency_margin_ms, calls=list(results),
    )  # fmt: skip
