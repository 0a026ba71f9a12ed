"""The call log: one typed, ordered list of what happened on a call, and the views made from it.

Call control, the capture observer, the turn timings, the responder and the tool runners each
append an event (a pydantic model with an ``event`` tag and ``at_s``, seconds since the call
started) to the call's :class:`CallLog`. Everything else that says what a call did is a
projection of it: the worker's in-memory record (``call.record.CallRecord``), the stored
record (``records.models.StoredCall``: its ``events``, ``turns``, ``intents``, ``tool_calls``,
``transfer`` and ``ended_by``), the post-call webhook, and the Redis session another worker
carries the call on from (``dispatch.sessions.CallSession.events``).

This module imports nothing of Switchboard's, so every layer may append to a log.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

EndedBy = Literal["agent", "caller", "idle", "max_duration", "transfer", "worker", "error"]
TransferMode = Literal["cold", "warm"]


class LogEvent(BaseModel):
    """What every event has: its tag (``event``) and when, in seconds since the call started."""

    model_config = ConfigDict(extra="forbid")

    # Call-control events are the ones the worker's record lists and a resumed call carries on
    # (the record's historical ``events``); the others have views of their own (turns, intents).
    control: ClassVar[bool] = True
    at_s: float = Field(0.0, ge=0)


class Turn(LogEvent):
    """One caller turn's stage timings, in ms from the caller's end of speech (its energy end)."""

    control: ClassVar[bool] = False
    event: Literal["turn"] = "turn"
    transcript: str = ""
    vad_stop_ms: float | None = None
    transcript_ms: float | None = None
    turn_end_ms: float | None = None
    first_tts_audio_ms: float | None = None
    bot_started_ms: float | None = None
    interrupted: bool = False


class Interrupted(LogEvent):
    """The caller cut the agent short (barge-in)."""

    control: ClassVar[bool] = False
    event: Literal["interrupted"] = "interrupted"


class IntentMatched(LogEvent):
    """The responder answered a caller turn with this intent (``fallback`` when none matched)."""

    control: ClassVar[bool] = False
    event: Literal["intent"] = "intent"
    intent: str


class KeypadPress(LogEvent):
    """A key the caller pressed on the menu; ``intent`` is what it chose (None: not on the menu).
    Keys typed into a digit collection are logged once, in its :class:`DigitsCollected`."""

    event: Literal["keypad"] = "keypad"
    digit: str
    intent: str | None = None


class KeypadIgnored(LogEvent):
    """A key pressed when no menu was listening (no menu, the call ending, a follow-up due)."""

    event: Literal["keypad_ignored"] = "keypad_ignored"
    digit: str


class DigitsCollected(LogEvent):
    """A digit string an intent collected (``timed_out``: ended by its timeout, not a key)."""

    event: Literal["digits"] = "digits"
    intent: str
    digits: str
    timed_out: bool = False


class DigitsSent(LogEvent):
    """Keypad tones the agent sent to the far end (a remote phone menu)."""

    event: Literal["send_digits"] = "send_digits"
    digits: str
    source: Literal["intent", "llm"]


class TransferRequested(LogEvent):
    """The agent transferred the caller; ``outcome`` is what the carrier said at once
    (``initiated`` for a cold transfer, whose result comes later as a :class:`TransferResult`)."""

    event: Literal["transfer"] = "transfer"
    intent: str
    target: str
    mode: TransferMode
    outcome: str


class TransferResult(LogEvent):
    """The carrier's later report of a cold transfer (Twilio's ``<Dial action>``)."""

    event: Literal["transfer_result"] = "transfer_result"
    outcome: str
    dial_status: str = ""


class LLMAction(LogEvent):
    """The LLM called a call-control tool that speaks first (``transfer_call``)."""

    event: Literal["tool"] = "tool"
    action: str
    intent: str


class ToolCall(LogEvent):
    """An agent tool (HTTP webhook) called mid-call: what was sent and what came back."""

    event: Literal["tool_call"] = "tool_call"
    tool: str
    by: Literal["intent", "llm"] = "intent"
    arguments: dict[str, Any] = Field(default_factory=dict)
    ok: bool
    error: str = ""
    result: dict[str, Any] = Field(default_factory=dict)


class EndCallRequested(LogEvent):
    """The LLM called ``end_call``."""

    event: Literal["end_call"] = "end_call"


class Reprompt(LogEvent):
    """The caller was silent; the agent asked again (``count``-th time)."""

    event: Literal["reprompt"] = "reprompt"
    count: int


class IdleHangUp(LogEvent):
    """The caller stayed silent through every re-prompt: the agent says goodbye."""

    event: Literal["idle_hangup"] = "idle_hangup"
    reprompts: int


class MaxDuration(LogEvent):
    """The call reached the agent's time limit: the agent says its closing line."""

    event: Literal["max_duration"] = "max_duration"
    secs: float


class Resumed(LogEvent):
    """This worker carried on a call another one started (``at``: unix time)."""

    event: Literal["resumed"] = "resumed"
    at: float = Field(default_factory=time.time)


class HangUp(LogEvent):
    """The call ended; ``ended_by`` says who or what ended it."""

    control: ClassVar[bool] = False
    event: Literal["hang_up"] = "hang_up"
    ended_by: EndedBy


CallLogEvent = Annotated[
    Turn
    | Interrupted
    | IntentMatched
    | KeypadPress
    | KeypadIgnored
    | DigitsCollected
    | DigitsSent
    | TransferRequested
    | TransferResult
    | LLMAction
    | ToolCall
    | EndCallRequested
    | Reprompt
    | IdleHangUp
    | MaxDuration
    | Resumed
    | HangUp,
    Field(discriminator="event"),
]
EVENTS: TypeAdapter[CallLogEvent] = TypeAdapter(CallLogEvent)


class TransferSummary(BaseModel):
    """The call's transfer as the records show it: the request, and its latest outcome."""

    intent: str
    target: str
    mode: TransferMode
    outcome: str
    dial_status: str | None = None


E = TypeVar("E", bound=LogEvent)


class CallLog:
    """One call's events, oldest first, each stamped as it is added."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, events: Iterable[LogEvent] = ()
    ):
        self._clock = clock
        self._t0 = clock()
        self.events: list[LogEvent] = list(events)
        self._carried = 0  # events at the front that earlier workers logged (``carry_on``)

    def now(self) -> float:
        """Seconds since the call started."""
        return round(max(0.0, self._clock() - self._t0), 3)

    def add(self, event: E) -> E:
        event.at_s = self.now()
        self.events.append(event)
        return event

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def carry_on(self, previous: Iterable[dict[str, Any]]) -> None:
        """Put the control events of the worker(s) the call was on before first (a resumed
        call's session); one this worker cannot read is skipped, not fatal."""
        kept: list[LogEvent] = []
        for raw in previous:
            try:
                kept.append(EVENTS.validate_python(raw))
            except ValidationError:
                continue
        self.events[:0] = kept
        self._carried += len(kept)

    # -- projections ------------------------------------------------------------------------

    def control_events(self) -> list[dict[str, Any]]:
        """The call-control events as JSON objects: the worker record's and the session's."""
        return [e.model_dump(mode="json") for e in self.events if e.control]

    def turns(self) -> list[Turn]:
        return self.of(Turn)

    def intents(self) -> list[str]:
        return [e.intent for e in self.of(IntentMatched)]

    def tool_calls(self) -> list[ToolCall]:
        """This worker's tool calls (a carried-on call's earlier ones are in its first record)."""
        return [e for e in self.own() if isinstance(e, ToolCall)]

    def own(self) -> list[LogEvent]:
        """What happened on this worker: the log without the events carried on from others."""
        return self.events[self._carried :]

    def transfer(self) -> TransferSummary | None:
        """The last transfer asked for, with the carrier's later result if it came."""
        requested = self.of(TransferRequested)
        if not requested:
            return None
        last = requested[-1]
        summary = TransferSummary(
            intent=last.intent, target=last.target, mode=last.mode, outcome=last.outcome
        )
        after = self.events[self.events.index(last) :]
        results = [e for e in after if isinstance(e, TransferResult)]
        if results:
            summary.outcome = results[-1].outcome
            summary.dial_status = results[-1].dial_status or None
        return summary

    @property
    def ended_by(self) -> EndedBy | None:
        hang_ups = self.of(HangUp)
        return hang_ups[-1].ended_by if hang_ups else None

    def stored_events(self) -> list[LogEvent]:
        """What the stored record keeps as ``events``: this worker's, but the turns (kept apart).
        A carried-on call's record is merged with its earlier one, which has the rest."""
        return [e for e in self.own() if not isinstance(e, Turn)]


_CURRENT: contextvars.ContextVar[CallLog | None] = contextvars.ContextVar(
    "switchboard_call_log", default=None
)


def current_log() -> CallLog | None:
    """The log of the call this task runs for (set by the call runner), if any.

    Code deep in a call's pipeline (the responder, the LLM's tool handlers) appends to it
    without being handed the call; tasks the pipeline starts inherit it, as they inherit the
    call's log context (``observability.logging.call_context``)."""
    return _CURRENT.get()


@contextlib.contextmanager
def logging_to(log: CallLog) -> Iterator[CallLog]:
    token = _CURRENT.set(log)
    try:
        yield log
    finally:
        _CURRENT.reset(token)
