"""Match what a caller said to an intent: whole-word phrase search, first intent wins."""

from __future__ import annotations

import re
from dataclasses import dataclass

from switchboard.agent.config import AgentConfig, Intent

_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize(text: str) -> str:
    """Lower-case words separated by single spaces, punctuation dropped."""
    return " ".join(_NON_WORD.sub(" ", text.lower().replace("’", "'")).split())


@dataclass(frozen=True)
class Match:
    """The reply chosen for one caller utterance."""

    intent: Intent | None
    reply: str

    @property
    def name(self) -> str:
        return self.intent.name if self.intent else "fallback"

    @property
    def end_call(self) -> bool:
        return bool(self.intent and self.intent.end_call)


class IntentMatcher:
    """Compiled phrase patterns of one agent config."""

    def __init__(self, config: AgentConfig):
        self._config = config
        self._patterns = [
            (intent, re.compile(r"\b(?:" + "|".join(re.escape(normalize(p)) for p in intent.phrases) + r")\b"))
            for intent in config.intents
        ]

    def match(self, utterance: str) -> Match:
        text = normalize(utterance)
        for intent, pattern in self._patterns:
            if pattern.search(text):
                return Match(intent, intent.reply)
        return Match(None, self._config.fallback)
