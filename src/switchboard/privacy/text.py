"""Redacting text: each PII span replaced by its type (``[CARD]``, ``[KEYPAD]``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from switchboard.privacy.detect import ENTITY_TYPES, detect


def placeholder(kind: str) -> str:
    return f"[{kind.upper()}]"


def redact_text(
    text: str,
    entities: Iterable[str] = ENTITY_TYPES,
    known_digits: Iterable[str] = (),
    found: Counter | None = None,
) -> str:
    """``text`` with each PII span replaced by its placeholder; ``found`` counts them by type."""
    for e in reversed(detect(text, entities, known_digits)):
        text = text[: e.start] + placeholder(e.type) + text[e.end :]
        if found is not None:
            found[e.type] += 1
    return text
