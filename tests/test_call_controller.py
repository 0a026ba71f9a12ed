"""``CallController`` in-process, its timers driven by a clock the test advances (no sleeps).

Silence re-prompts, the time limit, keypad menus and digit timeouts, and follow-ups that run
once the line before them has been spoken: what the end-to-end tests in test_call_control.py
check over a real call, here in milliseconds with exact timings.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputDTMFFrame,
    KeypadEntry,
    OutputDTMFFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection

from conftest import REPO
from switchboard.agent.config import load_agent_config
from switchboard.call.conversation.call_control import CallController
from switchboard.call.conversation.call_timers import CallTimers
from switchboard.engines.call_actions import (
    FOLLOW_UP_LIMIT_SECS,
    HangUpFrame,
    IntentFollowUpFrame,
    SendDigitsFrame,
)
from switchboard.telephony.base import TransferOutcome, UnsupportedOperation

NUMBERS = REPO / "tests" / "agents" / "numbers"


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Time that moves only when the test says so; timers fire in order as it passes them."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[_Timer] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> _Timer:
        timer = _Timer(self.now + delay, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    async def advance(self, secs: float) -> None:
        target = self.now + secs
        while self._timers and self._timers[0].when <= target:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self.now = timer.when
                timer.callback()
                await settle()
        self.now = target
        await settle()


async def settle() -> None:
    """Let the tasks the controller spawned run to their next wait."""
    for _ in range(20):
        await asyncio.sleep(0)


class FakeWorker:
    """The pipeline worker as the controller uses it: what it was asked to say and do."""

    def __init__(self) -> None:
        self.queued: list[Frame] = []
        self.stopped = False

    async def queue_frames(self, frames: list[Frame]) -> None:
        self.queued.extend(frames)

    async def queue_frame(self, frame: Frame) -> None:
        self.queued.append(frame)

    async def stop_when_done(self) -> None:
        self.stopped = True

    @property
    def said(self) -> list[str]:
        return [f.text for f in self.queued if isinstance(f, TTSSpeakFrame)]


class FakeControl:
    """Call control of an ingress that can hang up and nothing else on the phone network."""

    async def hang_up(self) -> None:
        pass

    async def transfer(self, target: str) -> TransferOutcome:
        raise UnsupportedOperation("no transfers here")


@dataclass
class Call:
    controller: CallController
    worker: FakeWorker
    clock: ManualClock

    async def push(self, frame: Frame) -> None:
        await self.controller.on_push_frame(
            FramePushed(source=None, destination=None, frame=frame,  # type: ignore[arg-type]
                        direction=FrameDirection.DOWNSTREAM, timestamp=0)
        )
        await settle()

    async def agent_speaks(self, secs: float = 1.0) -> None:
        """The line queued last is played: the bot starts, talks ``secs``, stops."""
        await self.push(BotStartedSpeakingFrame())
        await self.clock.advance(secs)
        await self.push(BotStoppedSpeakingFrame())

    async def key(self, digit: str) -> None:
        await self.push(InputDTMFFrame(button=KeypadEntry(digit)))


@pytest.fixture
async def make_call():
    calls: list[Call] = []

    async def make(agent_file: str) -> Call:
        clock, worker = ManualClock(), FakeWorker()
        agent = load_agent_config(NUMBERS / agent_file)
        controller = CallController(worker, agent, FakeControl(), call_id="call-unit", clock=clock.time)  # type: ignore[arg-type]
        controller.timers = CallTimers(clock)
        controller.start()
        call = Call(controller, worker, clock)
        calls.append(call)
        await call.agent_speaks(2.0)  # the greeting
        return call

    yield make
    for call in calls:
        await call.controller.stop()


async def test_a_silent_caller_is_reprompted_after_the_set_silence_then_hung_up_on(make_call) -> None:
    call = await make_call("call_control.yaml")  # reprompt after 3 s, once
    await call.clock.advance(2.99)
    assert call.worker.said == []
    await call.clock.advance(0.01)
    assert call.worker.said == ["Are you still there?"]
    await call.agent_speaks()
    await call.clock.advance(2.99)
    assert call.worker.said == ["Are you still there?"]
    await call.clock.advance(0.01)
    assert call.worker.said[-1] == "I will hang up now. Goodbye."
    assert not call.worker.stopped, "the goodbye is spoken before hanging up"
    await call.agent_speaks()
    assert call.worker.stopped and call.controller.ended_by == "idle"


async def test_the_silence_clock_waits_while_the_caller_speaks_and_restarts_when_they_stop(make_call) -> None:
    call = await make_call("call_control.yaml")
    await call.clock.advance(2.0)
    await call.push(UserStartedSpeakingFrame())
    await call.clock.advance(10.0)  # a long sentence is not silence
    assert call.worker.said == []
    await call.push(UserStoppedSpeakingFrame())
    await call.clock.advance(2.99)
    assert call.worker.said == []
    await call.clock.advance(0.01)
    assert call.worker.said == ["Are you still there?"]


async def test_the_time_limit_closes_the_call_politely_after_the_current_line(make_call) -> None:
    call = await make_call("short_calls.yaml")  # 6 s, silence re-prompt only after 60 s
    await call.clock.advance(3.99)  # 2 s of greeting + 3.99 s
    assert call.worker.said == []
    await call.clock.advance(0.01)
    assert call.worker.said == ["Our time is up. Thank you for calling, goodbye."]
    await call.agent_speaks()
    assert call.worker.stopped and call.controller.ended_by == "max_duration"


async def test_a_menu_key_interrupts_and_answers_with_its_intent_and_a_bad_key_is_told_so(make_call) -> None:
    call = await make_call("call_control.yaml")
    await call.key("1")
    await call.key("7")
    assert call.worker.said == ["You asked about playing cards.", "That key does nothing."]


async def test_digit_collection_times_out_from_the_end_of_the_prompt_and_of_the_last_key(make_call) -> None:
    call = await make_call("call_control.yaml")  # key 2 collects up to 6 digits, 3 s timeout
    await call.key("2")
    assert call.worker.said == ["Please type your account number, then press pound."]
    await call.push(BotStartedSpeakingFrame())
    await call.clock.advance(10.0)  # a long prompt: no timeout while it plays
    await call.push(BotStoppedSpeakingFrame())
    await call.clock.advance(2.0)
    await call.key("3")
    await call.clock.advance(2.0)
    await call.key("8")
    await call.clock.advance(2.99)
    assert len(call.worker.said) == 1, "3 s since the last key have not passed"
    await call.clock.advance(0.01)
    assert call.worker.said[-1] == "Thank you, I have 3 8."


async def test_the_terminator_ends_digit_collection_at_once(make_call) -> None:
    call = await make_call("call_control.yaml")
    await call.key("2")
    await call.agent_speaks()
    for digit in "4521#":
        await call.key(digit)
    assert call.worker.said[-1] == "Thank you, I have 4 5 2 1."
    await call.clock.advance(10.0)
    assert call.worker.said[-1] == "Thank you, I have 4 5 2 1.", "no timeout after the terminator"


async def test_an_end_call_follow_up_waits_for_its_line_to_be_heard(make_call) -> None:
    call = await make_call("call_control.yaml")
    await call.key("9")  # goodbye: end_call
    assert call.worker.said[-1] == "Thank you for calling, goodbye."
    await call.clock.advance(5.0)
    assert not call.worker.stopped, "hung up before the goodbye was played"
    await call.agent_speaks()
    assert call.worker.stopped and call.controller.ended_by == "agent"


async def test_a_follow_up_whose_line_never_plays_runs_after_the_follow_up_limit(make_call) -> None:
    call = await make_call("call_control.yaml")
    await call.push(HangUpFrame(goodbye="Bye now."))
    assert call.worker.said[-1] == "Bye now."
    await call.clock.advance(FOLLOW_UP_LIMIT_SECS - 0.01)
    assert not call.worker.stopped
    await call.clock.advance(0.01)
    assert call.worker.stopped, "a line that never produced audio must not leave the call hanging"


async def test_keys_pressed_while_the_agent_says_goodbye_are_ignored(make_call) -> None:
    call = await make_call("call_control.yaml")
    await call.key("9")
    said = list(call.worker.said)
    await call.key("1")
    assert call.worker.said == said


async def test_an_intent_an_llm_tool_chose_is_said_then_followed(make_call) -> None:
    call = await make_call("call_control.yaml")
    await call.push(IntentFollowUpFrame(intent="front_desk", line="Putting you through."))
    assert call.worker.said[-1] == "Putting you through."
    await call.agent_speaks()  # the transfer runs once the line was heard; this ingress has none
    assert call.worker.said[-1] == call.controller.agent.transfer_failed
    events = [e.event for e in call.controller.log.events]
    assert events[-2:] == ["tool", "transfer"], events
    assert not call.worker.stopped


async def test_digits_an_llm_tool_sends_are_queued_at_once_and_logged(make_call) -> None:
    call = await make_call("call_control.yaml")
    await call.push(SendDigitsFrame(digits="12#"))
    keys = [f.button.value for f in call.worker.queued if isinstance(f, OutputDTMFFrame)]
    assert keys == ["1", "2", "#"], call.worker.queued
    assert call.controller.log.events[-1].event == "send_digits"
