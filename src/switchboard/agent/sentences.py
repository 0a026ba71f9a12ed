"""The sentences of a line the agent says: Piper synthesises (and caches) one sentence at a time."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, as a sentence aggregator would emit them."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
