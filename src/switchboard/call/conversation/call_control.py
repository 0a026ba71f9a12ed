"""Call control inside a call: silence, the time limit, the keypad, hang-up, transfer, digits.

:class:`CallController` watches the call's frames as an observer (it is not a processor, so
the pipeline is unchanged) and speaks by queueing ``TTSSpeakFrame``s on the pipeline worker,
as the greeting is spoken. Each concern has its own module: :mod:`.silence` (re-prompts and
the time limit), :mod:`.keypad` (menu and digit collection), :mod:`.transfer`,
:mod:`.intent_tool` and :mod:`.send_digits`; this one holds the call's shared state and runs
follow-ups (see :mod:`switchboard.engines.call_actions`) once the line before them has been spoken. What it does
to the phone call itself (transfer) goes through the ingress's
:class:`~switchboard.telephony.base.CallControl`, so it works the same on every ingress that
can do it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
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
from switchboard.agent.intent_tool import intent_tool_call
from switchboard.call.conversation.call_timers import CallTimers
from switchboard.call.conversation.keypad import KeypadInput
from switchboard.call.conversation.send_digits import Source, dial_frames
from switchboard.call.conversation.silence import SilenceWatch
from switchboard.call.conversation.transfer import CONNECTED, UNANSWERED, transfer
from switchboard.call_log import CallLog, DigitsSent, EndCallRequested, LLMAction
from switchboard.engines.call_actions import (
    FOLLOW_UP_LIMIT_SECS,
    HangUpFrame,
    IntentFollowUpFrame,
    SendDigitsFrame,
)
from switchboard.observability import metrics
from switchboard.telephony.base import CallControl, TransferOutcome

__all__ = ["FOLLOW_UP_LIMIT_SECS", "CallController"]


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
        IntentFollowUpFrame,
        HangUpFrame,
        SendDigitsFrame,
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
        log: CallLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.worker = worker
        self.agent = agent
        self.control = control
        self.call_id = call_id
        self.tool_secret = tool_secret
        self.timers = CallTimers()
        self.silence = SilenceWatch(self)
        self.keypad = KeypadInput(self)
        # What the call did; the runner makes it, a test may leave it to us.
        self.log = log if log is not None else CallLog(clock)
        self.ended_by = ""
        self.ending = False
        self.on_hold = False  # a tool or a transfer is running: no silence re-prompts
        self._seen: set[int] = set()
        self._user_speaking = False
        self._bot_speaking = False
        self._follow_up: Callable[[], Awaitable[None]] | None = None
        self._follow_up_heard = False

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the call's clocks (call it once, as the pipeline starts)."""
        self.silence.start()

    async def stop(self) -> None:
        await self.timers.stop()

    # -- what the call's frames tell us -----------------------------------------------------

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if isinstance(frame, UserStartedSpeakingFrame | VADUserStartedSpeakingFrame):
            if not self._user_speaking:
                self._user_speaking = True
                self.silence.caller_active()
        elif isinstance(frame, UserStoppedSpeakingFrame | VADUserStoppedSpeakingFrame):
            if self._user_speaking:
                self._user_speaking = False
                self.silence.arm()
        elif isinstance(frame, BotStartedSpeakingFrame):
            if not self._bot_speaking:
                self._bot_speaking = True
                self._follow_up_heard = True
                self.silence.pause()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            if self._bot_speaking:
                self._bot_speaking = False
                self._bot_finished()
        elif isinstance(
            frame,
            InputDTMFFrame | IntentFollowUpFrame | HangUpFrame | SendDigitsFrame | EndWorkerFrame,
        ) and self._first_sighting(frame):
            self.timers.spawn(self._handle(frame))

    def _first_sighting(self, frame: Frame) -> bool:
        """Observers see a frame at every hop; act on it once."""
        if frame.id in self._seen:
            return False
        self._seen.add(frame.id)
        return True

    async def _handle(self, frame: Frame) -> None:
        if isinstance(frame, InputDTMFFrame):
            await self.keypad.key(str(frame.button.value))
        elif isinstance(frame, HangUpFrame) and not self.ending:
            self.log.add(EndCallRequested())
            await self.end_with(frame.goodbye, "agent")
        elif isinstance(frame, SendDigitsFrame):
            # At once: Pipecat's TTS and output keep frames in order behind the audio of the
            # text the LLM streamed before the call, so the tones follow its words.
            await self._send_digits(frame.digits, "llm")
        elif isinstance(frame, IntentFollowUpFrame):
            await self._on_intent_follow_up(frame)
        elif isinstance(frame, EndWorkerFrame) and not self.ended_by:
            self.ended_by = "agent"  # a scripted goodbye intent (end_call: true)
            self.ending = True

    async def _on_intent_follow_up(self, frame: IntentFollowUpFrame) -> None:
        intent = self.agent.intent(frame.intent)
        if intent is None:
            return
        if frame.line:  # an LLM tool chose the intent: its reply was not spoken yet
            self.log.add(LLMAction(action="transfer", intent=intent.name))
            await self.say(frame.line)
        self.follow_reply(intent)

    # -- follow-ups -------------------------------------------------------------------------

    def follow_reply(self, intent: Intent) -> None:
        """After an intent's reply: collect digits (keys pressed during the prompt count), or
        hang up, transfer or send digits once the reply has been heard, or call its tool."""
        if intent.collect_digits is not None:
            self.keypad.start_collecting(intent)
        elif intent.end_call or intent.transfer or intent.send_digits:
            self._after_speaking(lambda: self._follow_intent(intent))
        elif intent.tool:
            # At once: the reply covers the tool's latency.
            self.timers.spawn(self._intent_tool(intent))

    async def _follow_intent(self, intent: Intent) -> None:
        if intent.end_call:
            self.ending = True
            self.ended_by = self.ended_by or "agent"
            metrics.CALLS_ENDED_BY_AGENT.labels(reason="agent").inc()
            await self._hang_up()
        elif intent.transfer:
            await self._transfer(intent, intent.transfer)
        elif intent.send_digits:
            await self._send_digits(intent.send_digits, "intent")

    async def _transfer(self, intent: Intent, target: str) -> None:
        self.on_hold = True  # no silence re-prompts while the carrier works
        try:
            requested = await transfer(self.control, intent, target, brief=self.say_heard)
        finally:
            self.on_hold = False
        self.log.add(requested)
        outcome = TransferOutcome(requested.outcome)
        if outcome in CONNECTED:
            # The carrier now runs the call elsewhere; our side of the media ends.
            self.ending = True
            self.ended_by = "transfer"
            await self.worker.stop_when_done()
        elif outcome in UNANSWERED:  # a warm transfer, or a REFER whose outcome came back
            await self.say(self.agent.transfer_unanswered)
        else:
            await self.say(self.agent.transfer_failed)

    async def _send_digits(self, digits: str, source: Source) -> None:
        """Queue ``digits`` (already validated) behind what the agent is saying; log, count."""
        self.log.add(DigitsSent(digits=digits, source=source))
        metrics.DTMF_SENT.labels(source=source).inc()
        await self.worker.queue_frames(dial_frames(digits))

    async def _intent_tool(self, intent: Intent) -> None:
        """Call the intent's tool (the reply covers its latency) and say its answer."""
        self.on_hold = True
        self.silence.pause()
        try:
            logged, line = await intent_tool_call(
                self.agent, intent, self.keypad.last_digits, self.say,
                call_id=self.call_id, secret=self.tool_secret,
            )
        finally:
            self.on_hold = False
        self.log.add(logged)
        if line:
            await self.say(line)
        self.silence.arm()

    @property
    def follow_up_pending(self) -> bool:
        return self._follow_up is not None

    def _bot_finished(self) -> None:
        self.keypad.prompt_spoken()
        if self._follow_up is not None and self._follow_up_heard:
            follow_up, self._follow_up = self._follow_up, None
            self.timers.cancel("follow_up")
            self.timers.spawn(follow_up())
        self.silence.arm()

    def _after_speaking(self, follow_up: Callable[[], Awaitable[None]]) -> None:
        """Run ``follow_up`` once the line just queued has been spoken."""
        self._follow_up = follow_up
        self._follow_up_heard = False
        self.silence.pause()
        self.timers.schedule("follow_up", FOLLOW_UP_LIMIT_SECS, self._follow_up_overdue)

    async def _follow_up_overdue(self) -> None:
        if self._follow_up is not None:
            logger.warning(
                "call control: no audio for the line before a follow-up; doing it anyway"
            )
            follow_up, self._follow_up = self._follow_up, None
            await follow_up()

    # -- ending the call --------------------------------------------------------------------

    async def end_with(self, line: str, reason: str) -> None:
        """Say ``line``, then hang up; ``reason`` is how the record says the call ended."""
        self.ending = True
        self.ended_by = self.ended_by or reason
        metrics.CALLS_ENDED_BY_AGENT.labels(reason=reason).inc()
        await self.say(line)
        self._after_speaking(self._hang_up)

    async def _hang_up(self) -> None:
        logger.info(f"call control: ending the call ({self.ended_by})")
        await self.worker.stop_when_done()

    # -- what the parts share ---------------------------------------------------------------

    def quiet(self) -> bool:
        """Nobody speaks and nothing is pending: the silence clock may run."""
        return not (
            self._user_speaking
            or self._bot_speaking
            or self.ending
            or self._follow_up is not None
            or self.keypad.collecting
            or self.on_hold
        )

    async def say(self, text: str) -> None:
        self.silence.pause()
        await self.worker.queue_frames([TTSSpeakFrame(text)])

    async def say_heard(self, text: str) -> None:
        """Say ``text`` and return once it has been heard (or the follow-up limit passed)."""
        heard = asyncio.Event()

        async def done() -> None:
            heard.set()

        await self.say(text)
        self._after_speaking(done)
        await heard.wait()

    async def interrupt(self) -> None:
        """A key press cuts the agent short, as a caller's voice does."""
        if self._bot_speaking:
            await self.worker.queue_frame(InterruptionFrame())
