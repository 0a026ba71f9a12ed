"""A quiet caller and a long call: re-prompts, then goodbye; the polite time limit.

* **Silence**: the clock runs while neither side speaks and nothing else is pending; after
  ``silence.reprompt_after_secs`` the agent says ``silence.reprompt``; after
  ``silence.max_reprompts`` of those it says ``silence.goodbye`` and hangs up. Caller speech
  or a key press resets the count.
* **Time limit**: ``limits.max_duration_secs`` after the call starts the agent says
  ``limits.closing`` (after whatever it is saying) and hangs up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchboard.call_log import IdleHangUp, MaxDuration, Reprompt

if TYPE_CHECKING:
    from switchboard.call.conversation.call_control import CallController


class SilenceWatch:
    """One call's silence clock and time limit."""

    def __init__(self, call: CallController):
        self._call = call
        self._reprompts = 0

    def start(self) -> None:
        limits = self._call.agent.limits
        self._call.timers.schedule("max_duration", limits.max_duration_secs, self._time_is_up)
        self.arm()

    def caller_active(self) -> None:
        """The caller spoke or pressed a key: they are there."""
        self._reprompts = 0
        self.pause()

    def pause(self) -> None:
        self._call.timers.cancel("silence")

    def arm(self) -> None:
        """Start the silence clock, if the line is quiet with nothing pending."""
        if self._call.quiet():
            self._call.timers.schedule(
                "silence", self._call.agent.silence.reprompt_after_secs, self._elapsed
            )

    async def _elapsed(self) -> None:
        call = self._call
        if not call.quiet():
            return
        silence = call.agent.silence
        if self._reprompts < silence.max_reprompts:
            self._reprompts += 1
            call.log.add(Reprompt(count=self._reprompts))
            await call.say(silence.reprompt)
        else:
            call.log.add(IdleHangUp(reprompts=self._reprompts))
            await call.end_with(silence.goodbye, "idle")

    async def _time_is_up(self) -> None:
        call = self._call
        if call.ending:
            return
        call.log.add(MaxDuration(secs=call.agent.limits.max_duration_secs))
        await call.end_with(call.agent.limits.closing, "max_duration")
