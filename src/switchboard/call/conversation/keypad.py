"""The caller's keypad: a menu of intents by digit, and collecting a digit string.

A key press cuts the agent short (as a caller's voice does) and answers as the menu's intent
would; while an intent collects digits (``collect_digits``), keys go to its buffer until the
terminator, ``max_digits`` or ``timeout_secs`` since the last key (or since the prompt ended).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchboard.agent.config import Intent
from switchboard.agent.digits import DigitBuffer
from switchboard.call_log import DigitsCollected, KeypadIgnored, KeypadPress
from switchboard.engines.call_actions import FOLLOW_UP_LIMIT_SECS
from switchboard.observability import metrics

if TYPE_CHECKING:
    from switchboard.call.conversation.call_control import CallController


class KeypadInput:
    """One call's keypad menu and digit collection."""

    def __init__(self, call: CallController):
        self._call = call
        self._digits: DigitBuffer | None = None
        self.last_digits = ""  # the last string collected, for a tool's {digits}

    @property
    def collecting(self) -> bool:
        return self._digits is not None

    async def key(self, digit: str) -> None:
        call = self._call
        call.silence.caller_active()
        if self._digits is not None:
            await self._collect(digit)
            return
        keypad = call.agent.keypad
        if keypad is None or call.ending or call.follow_up_pending:
            call.log.add(KeypadIgnored(digit=digit))
            metrics.DTMF_DIGITS.labels(result="ignored").inc()
            return
        intent = call.agent.intent(keypad.options.get(digit, ""))
        await call.interrupt()
        if intent is None:
            call.log.add(KeypadPress(digit=digit, intent=None))
            metrics.DTMF_DIGITS.labels(result="invalid").inc()
            await call.say(keypad.invalid)
            return
        call.log.add(KeypadPress(digit=digit, intent=intent.name))
        metrics.DTMF_DIGITS.labels(result="menu").inc()
        await call.say(intent.reply)
        call.follow_reply(intent)

    def start_collecting(self, intent: Intent) -> None:
        """Keys from now on (those pressed during the prompt too) go to ``intent``'s buffer."""
        assert intent.collect_digits is not None
        self._digits = DigitBuffer(intent)
        self._call.silence.pause()
        self._call.timers.schedule(
            "digits",
            intent.collect_digits.timeout_secs + FOLLOW_UP_LIMIT_SECS,
            self._timed_out,
        )

    def prompt_spoken(self) -> None:
        """The prompt has been heard: with no key yet, the timeout runs from here."""
        if self._digits is not None and not self._digits.digits:
            self._call.timers.schedule("digits", self._digits.spec.timeout_secs, self._timed_out)

    async def _collect(self, digit: str) -> None:
        assert self._digits is not None
        metrics.DTMF_DIGITS.labels(result="collected").inc()
        if self._digits.press(digit):
            await self._done()
        else:
            self._call.timers.schedule("digits", self._digits.spec.timeout_secs, self._timed_out)

    async def _timed_out(self) -> None:
        if self._digits is not None:
            await self._done(timed_out=True)

    async def _done(self, *, timed_out: bool = False) -> None:
        assert self._digits is not None
        buffer, self._digits = self._digits, None
        self._call.timers.cancel("digits")
        self.last_digits = buffer.digits
        self._call.log.add(
            DigitsCollected(intent=buffer.intent.name, digits=buffer.digits, timed_out=timed_out)
        )
        await self._call.say(buffer.reply())
