"""Call control inside a call: silence re-prompts, the time limit, the keypad, hang-up, transfer.

:class:`CallController` watches the call's frames as an observer (it is not a processor, so
the pipeline is unchanged) and speaks by queueing ``TTSSpeakFrame``s on the pipeline worker,
as the greeting is spoken. What it does to the phone call itself (transfer) goes through the
ingress's :class:`~switchboard.telephony.base.CallControl`, so it works the same on every
ingress that can do it.

Timing rules:

* **Silence**: the clock runs while neither side speaks and nothing else is pending; after
  ``silence.reprompt_after_secs`` the agent says ``silence.reprompt``; after
  ``silence.max_reprompts`` of those it says ``silence.goodbye`` and hangs up. Caller speech
  or a key press resets the count.
* **Time limit**: ``limits.max_duration_secs`` after the call starts the agent says
  ``limits.closing`` (after whatever it is saying) and hangs up.
* **Follow-ups** (hang up, transfer, collect digits) run once the line before them has been
  spoken: the first ``BotStoppedSpeakingFrame`` after a ``BotStartedSpeakingFrame``, or after
  ``FOLLOW_UP_LIMIT_SECS`` if no audio came at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DataFrame,
    EndWorkerFrame,
    Frame,
    InputDTMFFrame,
    InterruptionFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.worker import PipelineWorker

from switchboard.agent.config import AgentConfig, Intent
from switchboard.agent.digits import DigitBuffer
from switchboard.agent.tools import tool_turn
from switchboard.observability import metrics
from switchboard.telephony.base import (
    CallControl,
    CallControlError,
    TransferOutcome,
    UnsupportedOperation,
)

FOLLOW_UP_LIMIT_SECS = 20.0  # a line that never produced audio must not leave the call hanging


@dataclass
class CallActionFrame(DataFrame):
    """From a responder: after this reply is spoken, do the intent's follow-up."""

    action: Literal["transfer", "collect_digits", "end_call", "tool"]
    intent: str
    text: str = ""  # from an LLM tool: the line to say first (not yet spoken)


class CallController(BaseObserver):
    """One call's silence, time-limit, keypad and follow-up handling."""

    frame_types = (
        UserStartedSpeakingFrame,
        VADUserStartedSpeakingFrame,
        UserStoppedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        InputDTMFFrame,
        CallActionFrame,
        EndWorkerFrame,
    )

    def __init__(
        self,
        worker: PipelineWorker,
        agent: AgentConfig,
        control: CallControl,
        *,
        call_id: str = "",
        tool_secret: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self._call_id = call_id
        self._tool_secret = tool_secret
        self._tool_running = False
        self._last_digits = ""
        self._worker = worker
        self._agent = agent
        self._control = control
        self._clock = clock
        self.events: list[dict[str, Any]] = []
        self.ended_by = ""
        self.transfer: dict[str, Any] | None = None
        self._started = 0.0
        self._seen: set[int] = set()
        self._user_speaking = False
        self._bot_speaking = False
        self._reprompts = 0
        self._ending = False
        self._follow_up: Callable[[], Awaitable[None]] | None = None
        self._follow_up_heard = False
        self._digits: DigitBuffer | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the call's clocks (call it once, as the pipeline starts)."""
        self._started = self._clock()
        self._schedule("max_duration", self._agent.limits.max_duration_secs, self._time_is_up)
        self._arm_silence()

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- what the call's frames tell us -----------------------------------------------------

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if isinstance(frame, UserStartedSpeakingFrame | VADUserStartedSpeakingFrame):
            if not self._user_speaking:
                self._user_speaking = True
                self._caller_active()
        elif isinstance(frame, UserStoppedSpeakingFrame | VADUserStoppedSpeakingFrame):
            if self._user_speaking:
                self._user_speaking = False
                self._arm_silence()
        elif isinstance(frame, BotStartedSpeakingFrame):
            if not self._bot_speaking:
                self._bot_speaking = True
                self._follow_up_heard = True
                self._cancel("silence")
        elif isinstance(frame, BotStoppedSpeakingFrame):
            if self._bot_speaking:
                self._bot_speaking = False
                self._bot_finished()
        elif isinstance(
            frame, InputDTMFFrame | CallActionFrame | EndWorkerFrame
        ) and self._first_sighting(frame):
            self._spawn(self._handle(frame))

    def _first_sighting(self, frame: Frame) -> bool:
        """Observers see a frame at every hop; act on it once."""
        if frame.id in self._seen:
            return False
        self._seen.add(frame.id)
        return True

    async def _handle(self, frame: Frame) -> None:
        if isinstance(frame, InputDTMFFrame):
            await self._key(str(frame.button.value))
        elif isinstance(frame, CallActionFrame):
            await self._action(frame)
        elif isinstance(frame, EndWorkerFrame) and not self.ended_by:
            self.ended_by = "agent"  # a scripted goodbye intent (end_call: true)
            self._ending = True

    async def _action(self, frame: CallActionFrame) -> None:
        if frame.action == "end_call" and not self._ending:
            self._event("end_call")
            await self._end_with(frame.text or "Goodbye.", "agent")
            return
        intent = self._agent.intent(frame.intent)
        if intent is None:
            return
        if frame.text:  # a tool call: the reply was not spoken by the responder
            self._event("tool", action=frame.action, intent=intent.name)
            await self._say(frame.text)
        self._follow_reply(intent)

    # -- silence and the time limit ---------------------------------------------------------

    def _caller_active(self) -> None:
        self._reprompts = 0
        self._cancel("silence")

    def _quiet(self) -> bool:
        return not (
            self._user_speaking
            or self._bot_speaking
            or self._ending
            or self._follow_up is not None
            or self._digits is not None
            or self._tool_running
        )

    def _arm_silence(self) -> None:
        if self._quiet():
            self._schedule(
                "silence", self._agent.silence.reprompt_after_secs, self._silence_elapsed
            )

    async def _silence_elapsed(self) -> None:
        if not self._quiet():
            return
        silence = self._agent.silence
        if self._reprompts < silence.max_reprompts:
            self._reprompts += 1
            self._event("reprompt", count=self._reprompts)
            await self._say(silence.reprompt)
        else:
            self._event("idle_hangup", reprompts=self._reprompts)
            await self._end_with(silence.goodbye, "idle")

    async def _time_is_up(self) -> None:
        if self._ending:
            return
        self._event("max_duration", secs=self._agent.limits.max_duration_secs)
        await self._end_with(self._agent.limits.closing, "max_duration")

    async def _end_with(self, line: str, reason: str) -> None:
        self._ending = True
        self.ended_by = self.ended_by or reason
        metrics.CALLS_ENDED_BY_AGENT.labels(reason=reason).inc()
        await self._say(line)
        self._after_speaking(self._hang_up)

    async def _hang_up(self) -> None:
        logger.info(f"call control: ending the call ({self.ended_by})")
        await self._worker.stop_when_done()

    # -- the keypad -------------------------------------------------------------------------

    async def _key(self, digit: str) -> None:
        self._caller_active()
        if self._digits is not None:
            await self._collect(digit)
            return
        keypad = self._agent.keypad
        if keypad is None or self._ending or self._follow_up is not None:
            self._event("keypad_ignored", digit=digit)
            metrics.DTMF_DIGITS.labels(result="ignored").inc()
            return
        intent = self._agent.intent(keypad.options.get(digit, ""))
        await self._interrupt()
        if intent is None:
            self._event("keypad", digit=digit, intent=None)
            metrics.DTMF_DIGITS.labels(result="invalid").inc()
            await self._say(keypad.invalid)
            return
        self._event("keypad", digit=digit, intent=intent.name)
        metrics.DTMF_DIGITS.labels(result="menu").inc()
        await self._say(intent.reply)
        self._follow_reply(intent)

    def _follow_reply(self, intent: Intent) -> None:
        """After an intent's reply: collect digits (keys pressed during the prompt count), or
        hang up or transfer once the reply has been heard."""
        if intent.collect_digits is not None:
            self._digits = DigitBuffer(intent)
            self._cancel("silence")
            self._schedule(
                "digits",
                intent.collect_digits.timeout_secs + FOLLOW_UP_LIMIT_SECS,
                self._digits_timed_out,
            )
        elif intent.end_call or intent.transfer:
            self._after_speaking(lambda: self._follow_intent(intent))
        elif intent.tool:
            self._spawn(self._run_tool(intent))  # at once: the reply covers the tool's latency

    async def _follow_intent(self, intent: Intent) -> None:
        if intent.end_call:
            self._ending = True
            self.ended_by = self.ended_by or "agent"
            metrics.CALLS_ENDED_BY_AGENT.labels(reason="agent").inc()
            await self._hang_up()
        elif intent.transfer:
            await self._transfer(intent, intent.transfer)

    async def _collect(self, digit: str) -> None:
        assert self._digits is not None
        metrics.DTMF_DIGITS.labels(result="collected").inc()
        if self._digits.press(digit):
            await self._digits_done()
        else:
            self._schedule("digits", self._digits.spec.timeout_secs, self._digits_timed_out)

    async def _digits_timed_out(self) -> None:
        if self._digits is not None:
            await self._digits_done(timed_out=True)

    async def _digits_done(self, *, timed_out: bool = False) -> None:
        assert self._digits is not None
        buffer, self._digits = self._digits, None
        self._cancel("digits")
        self._last_digits = buffer.digits
        self._event("digits", intent=buffer.intent.name, digits=buffer.digits, timed_out=timed_out)
        await self._say(buffer.reply())

    # -- tools ----------------------------------------------------------------------------

    async def _run_tool(self, intent: Intent) -> None:
        tool = self._agent.tool(intent.tool or "")
        assert tool is not None  # validated with the config
        arguments = {
            k: v.replace("{digits}", self._last_digits) for k, v in intent.arguments.items()
        }
        self._tool_running = True
        self._cancel("silence")
        try:
            outcome = await tool_turn(
                tool,
                intent.answer,
                arguments,
                self._say,
                call_id=self._call_id,
                secret=self._tool_secret,
            )
        finally:
            self._tool_running = False
        self._event("tool_call", tool=tool.name, ok=outcome.ok, error=outcome.error)
        if outcome.line:
            await self._say(outcome.line)
        self._arm_silence()

    # -- transfer ---------------------------------------------------------------------------

    async def _transfer(self, intent: Intent, target: str) -> None:
        warm = intent.transfer_mode == "warm"
        self._tool_running = True  # the caller is on hold: no silence re-prompts meanwhile
        try:
            if warm:
                summary = intent.transfer_summary.replace("{intent}", intent.name.replace("_", " "))
                outcome = await self._control.warm_transfer(target, summary)
            else:
                outcome = await self._control.transfer(target)
        except UnsupportedOperation as e:
            logger.warning(f"call control: cannot transfer on this call: {e}")
            outcome = TransferOutcome.UNSUPPORTED
        except CallControlError as e:
            logger.warning(f"call control: transfer to {target} failed: {e}")
            outcome = TransferOutcome.FAILED
        finally:
            self._tool_running = False
        mode = "warm" if warm else "cold"
        self.transfer = {
            "intent": intent.name,
            "target": target,
            "mode": mode,
            "outcome": outcome.value,
        }
        self._event("transfer", target=target, mode=mode, outcome=outcome.value)
        metrics.TRANSFERS.labels(outcome=outcome.value).inc()
        if outcome in (TransferOutcome.INITIATED, TransferOutcome.ANSWERED):
            # The carrier now runs the call elsewhere; our side of the media ends.
            self._ending = True
            self.ended_by = "transfer"
            await self._worker.stop_when_done()
        elif warm and outcome in (TransferOutcome.BUSY, TransferOutcome.NO_ANSWER):
            await self._say(self._agent.transfer_unanswered)
        else:
            await self._say(self._agent.transfer_failed)

    # -- helpers ----------------------------------------------------------------------------

    def _bot_finished(self) -> None:
        if self._digits is not None and not self._digits.digits:  # the timeout runs from here
            self._schedule("digits", self._digits.spec.timeout_secs, self._digits_timed_out)
        if self._follow_up is not None and self._follow_up_heard:
            follow_up, self._follow_up = self._follow_up, None
            self._cancel("follow_up")
            self._spawn(follow_up())
        self._arm_silence()

    def _after_speaking(self, follow_up: Callable[[], Awaitable[None]]) -> None:
        """Run ``follow_up`` once the line just queued has been spoken."""
        self._follow_up = follow_up
        self._follow_up_heard = False
        self._cancel("silence")
        self._schedule("follow_up", FOLLOW_UP_LIMIT_SECS, self._follow_up_overdue)

    async def _follow_up_overdue(self) -> None:
        if self._follow_up is not None:
            logger.warning(
                "call control: no audio for the line before a follow-up; doing it anyway"
            )
            follow_up, self._follow_up = self._follow_up, None
            await follow_up()

    async def _say(self, text: str) -> None:
        self._cancel("silence")
        await self._worker.queue_frames([TTSSpeakFrame(text)])

    async def _interrupt(self) -> None:
        """A key press cuts the agent short, as a caller's voice does."""
        if self._bot_speaking:
            await self._worker.queue_frame(InterruptionFrame())

    def _event(self, kind: str, **fields: Any) -> None:
        self.events.append(
            {"event": kind, "at_s": round(self._clock() - self._started, 3), **fields}
        )

    def _schedule(self, name: str, delay: float, action: Callable[[], Awaitable[None]]) -> None:
        self._cancel(name)
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(delay, lambda: self._fire(name, action))

    def _fire(self, name: str, action: Callable[[], Awaitable[None]]) -> None:
        self._timers.pop(name, None)
        self._spawn(action())

    def _cancel(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        metrics.PIPELINE_ERRORS.labels(stage="call_control").inc()
        logger.opt(exception=error).error("call control step failed")
