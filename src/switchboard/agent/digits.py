"""Collecting a keypad digit string (an account number): terminator, length, what to say."""

from __future__ import annotations

from switchboard.agent.config import DigitCollection, Intent

_SPOKEN_DIGITS = {"*": "star", "#": "pound"}


def spoken_digits(digits: str) -> str:
    """Digits as a TTS engine should read them: one by one."""
    return " ".join(_SPOKEN_DIGITS.get(d, d) for d in digits)


class DigitBuffer:
    """The digits keyed so far for one intent's ``collect_digits``."""

    def __init__(self, intent: Intent):
        assert intent.collect_digits is not None
        self.intent = intent
        self.spec: DigitCollection = intent.collect_digits
        self._keys: list[str] = []

    @property
    def digits(self) -> str:
        return "".join(self._keys)

    def press(self, key: str) -> bool:
        """Take one key; True once the string is complete (terminator, or max_digits keyed)."""
        if key == self.spec.terminator:
            return True
        self._keys.append(key)
        return len(self._keys) >= self.spec.max_digits

    def reply(self) -> str:
        """What the agent says with the digits collected (``no_input`` when there are none)."""
        digits = self.digits
        return (
            self.spec.reply.format(digits=spoken_digits(digits)) if digits else self.spec.no_input
        )
