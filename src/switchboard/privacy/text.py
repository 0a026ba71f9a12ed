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


def redact_lines(
    lines: list[str],
    entities: Iterable[str] = ENTITY_TYPES,
    known_digits: Iterable[str] = (),
    found: Counter | None = None,
) -> list[str]:
    """One speaker's utterances, redacted as one text: a caller pausing between the groups of
    a card number makes a turn of each group ("3 7 8 2", "8 2 2 4 6"), and only together are
    they a card number. A span across utterances is replaced in each of them."""
    joined, starts = "", []
    for line in lines:
        starts.append(len(joined))
        joined += line + " "
    cuts: list[list[tuple[int, int, str]]] = [[] for _ in lines]
    for e in detect(joined, entities, known_digits):
        if found is not None:
            found[e.type] += 1
        for i, (line, start) in enumerate(zip(lines, starts, strict=True)):
            a, b = max(e.start, start) - start, min(e.end, start + len(line)) - start
            if a < b:
                cuts[i].append((a, b, e.type))
    out = []
    for line, spans in zip(lines, cuts, strict=True):
        for a, b, kind in reversed(spans):
            line = line[:a] + placeholder(kind) + line[b:]
        out.append(line)
    return out
