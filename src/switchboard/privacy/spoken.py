"""Spoken numbers as digits: "four one one one", "double five", "nineteen eighty-two" → 4111, 55, 1982.

Callers say numbers, and Whisper writes them sometimes as words, sometimes as digits, often
both in one utterance ("4111, one one one one"). Detection works on a normalised copy of the
text in which every run of spoken or written digits is one token of digits, and every token
remembers the span of the original text it came from, so a match in the copy redacts exactly
the words the caller said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {
    "zero": 0, "oh": 0, "o": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}  # fmt: skip
_REPEAT = {"double": 2, "triple": 3}
# "oh" and "o" are zero only beside other digits ("four oh two"), never alone ("oh, hi").
_WEAK_ZERO = {"oh", "o"}

# Words, numbers with their ordinal suffix, and the symbols that join parts of an address.
# A colon is a token so that it ends a run: "20:45:16" is a time, not six digits.
# A phone number written with dots ("415.555.0134") is one token: no decimal has two points.
_TOKEN = re.compile(r"(?<![\d.])\d{3}\.\d{3}\.\d{4}(?!\.?\d)|\d+(?:st|nd|rd|th)?|[A-Za-z]+(?:'[A-Za-z]+)?|[@.+\-/#():]")


_ORDINAL_DIGITS = re.compile(r"(\d{1,2})(st|nd|rd|th)")


@dataclass(frozen=True)
class Token:
    """A token of the normalised text: what it reads as, and the original span it came from."""

    text: str
    start: int
    end: int
    digits: bool = False  # a run of digits, spoken or written
    ordinal: bool = False  # "third", "3rd" (text is "3")


@dataclass(frozen=True, slots=True)
class _Word:
    text: str
    start: int
    end: int
    lower: str
    pause_before: bool = False  # a comma or semicolon between it and the word before


_PAUSE = re.compile(r"[,;]")


def _words(text: str) -> list[_Word]:
    words, end = [], 0
    for m in _TOKEN.finditer(text):
        words.append(_Word(m.group(), m.start(), m.end(), m.group().lower(), bool(_PAUSE.search(text, end, m.start()))))
        end = m.end()
    return words


def _number_words(words: list[_Word], i: int) -> tuple[str, int] | None:
    """The digits spoken from ``words[i]`` on, and how many words they take; None if none."""
    w = words[i].lower
    nxt = words[i + 1].lower if i + 1 < len(words) else ""
    if w in _REPEAT and nxt in UNITS:
        return str(UNITS[nxt]) * _REPEAT[w], 2
    if w in _REPEAT and len(nxt) == 1 and nxt.isdigit():  # as Whisper writes it: "double 5"
        return nxt * _REPEAT[w], 2
    if w.isdigit():
        return w, 1
    if w[:1].isdigit() and "." in w:  # "415.555.0134"
        return w.replace(".", ""), 1
    if w in TENS:
        # "forty-two", "forty two"; a hyphen is its own token; "forty, two" is two groups
        j = i + 1
        if j < len(words) and words[j].text == "-":
            j += 1
        unit = words[j] if j < len(words) else None
        if unit and unit.lower in UNITS and unit.lower not in _WEAK_ZERO and UNITS[unit.lower] > 0 and not unit.pause_before:
            return str(TENS[w] + UNITS[unit.lower]), j - i + 1
        return str(TENS[w]), 1
    if w in TEENS:
        return str(TEENS[w]), 1
    if w in UNITS:
        if nxt == "hundred" and not words[i + 1].pause_before:
            return _hundreds(words, i)
        if nxt == "thousand" and UNITS[w] > 0 and not words[i + 1].pause_before:
            return _thousands(words, i)
        return str(UNITS[w]), 1
    return None


def _rest(words: list[_Word], i: int, j: int, most: int) -> tuple[str, int] | None:
    """After "hundred" or "thousand" at ``j - 1`` (or its "and"): the number that completes it
    ("two hundred and five"), unless a pause says it is the next group of digits ("one eight
    hundred, five five five")."""
    if j < len(words) and words[j].lower == "and" and not words[j].pause_before:
        j += 1
    if j >= len(words) or words[j].pause_before and words[j - 1].lower != "and":
        return None
    rest = _number_words(words, j)
    if rest is None or len(rest[0]) > most or words[j].lower in ("hundred", "thousand"):
        return None
    return rest[0], j - i + rest[1]


def _thousands(words: list[_Word], i: int) -> tuple[str, int]:
    """"two thousand", "two thousand and five", "two thousand twelve": the years of a birth."""
    base = UNITS[words[i].lower] * 1000
    rest = _rest(words, i, i + 2, most=3)
    if rest is None:
        return str(base), 2
    return str(base + int(rest[0])), rest[1]


def _hundreds(words: list[_Word], i: int) -> tuple[str, int]:
    """"two hundred", "two hundred and five", "two hundred fifty-one"."""
    base = UNITS[words[i].lower] * 100
    rest = _rest(words, i, i + 2, most=2)
    if rest is None:
        return str(base), 2
    return str(base + int(rest[0])), rest[1]


def _ordinal(word: _Word, prev: Token | None) -> int | None:
    """The day an ordinal names: "third", "3rd", "twenty-first" (with the "twenty" before it)."""
    w = word.lower
    if w in ORDINALS:
        return ORDINALS[w]
    if not w[:1].isdigit():
        return None
    m = _ORDINAL_DIGITS.fullmatch(w)
    return int(m.group(1)) if m else None


def normalise(text: str, *, merge_digits: bool = True) -> list[Token]:
    """The tokens of ``text`` with spoken numbers as digits; with ``merge_digits``, each run of
    numbers (said in groups, with commas, dashes or dots between) becomes one token."""
    words = _words(text)
    tokens: list[Token] = []
    i = 0
    while i < len(words):
        word = words[i]
        ordinal = _ordinal(word, tokens[-1] if tokens else None)
        if ordinal is not None:
            prev = tokens[-1] if tokens else None
            # "twenty first": the tens word before it belongs to the ordinal
            if prev is not None and prev.digits and prev.text in {str(v) for v in TENS.values()} and ordinal < 10:
                tokens[-1] = Token(str(int(prev.text) + ordinal), prev.start, word.end, ordinal=True)
            else:
                tokens.append(Token(str(ordinal), word.start, word.end, ordinal=True))
            i += 1
            continue
        if word.lower == "a" and _between_digits(words, i):  # "five five five, a one two three": "oh" misheard
            tokens.append(Token("0", word.start, word.end, digits=True))
            i += 1
            continue
        spoken = _number_words(words, i)
        if spoken is not None and not (word.lower in _WEAK_ZERO and not _beside_digits(words, i)):
            digits, used = spoken
            tokens.append(Token(digits, word.start, words[i + used - 1].end, digits=True))
            i += used
            continue
        tokens.append(Token(word.text, word.start, word.end))
        i += 1
    return merge_runs(tokens) if merge_digits else tokens


def _digit(words: list[_Word], j: int) -> bool:
    return 0 <= j < len(words) and (words[j].lower in UNITS or words[j].text.isdigit()) and words[j].lower not in _WEAK_ZERO


def _beside_digits(words: list[_Word], i: int) -> bool:
    return _digit(words, i - 1) or _digit(words, i + 1)


def _between_digits(words: list[_Word], i: int) -> bool:
    """Between two digits said one at a time ("five, a one"), not beside a number ("2 a day")."""

    def single(j: int) -> bool:
        return _digit(words, j) and (words[j].lower in UNITS or len(words[j].text) == 1)

    return single(i - 1) and single(i + 1)


_JOINERS = {"-", ".", "/", "(", ")"}


def _decimal(joiner: Token, after: Token) -> bool:
    """"3.30", "127.0.0.1": a dot right before the next digits joins a decimal or an address, not
    groups of a spoken number (which Whisper writes "4. 2. 4" or "4-2-4")."""
    return joiner.text == "." and joiner.end == after.start


def _joiner_end(tokens: list[Token], j: int) -> int | None:
    """Where the digits after the joiner at ``j`` start, if it joins two groups of one number:
    "-", "/" or a dot with a space after it, or an ellipsis ("4111... 1111": a pause)."""
    k = j
    while k < len(tokens) and tokens[k].text == ".":
        k += 1
    if k - j >= 2:
        return k if k < len(tokens) and tokens[k].digits else None
    joiner, after = tokens[j], tokens[j + 1] if j + 1 < len(tokens) else None
    if joiner.text not in _JOINERS or after is None:
        return None
    return j + 1 if (after.digits or after.text == "(") and not _decimal(joiner, after) else None


# Digits the ASR writes as words that sound the same ("3714 for 963", "2 to 1 9").
_HEARD_AS = {"for": "4", "to": "2", "too": "2", "won": "1", "ate": "8"}
_LONG_RUN = 7


def _misheard_digit(run: str, tokens: list[Token], j: int) -> bool:
    """Whether ``tokens[j]`` is a digit the ASR wrote as a word: between two digits said one at a
    time, or inside a long number; "from 10 to 12" stays two numbers."""
    after = tokens[j + 1] if j + 1 < len(tokens) else None
    if tokens[j].text.lower() not in _HEARD_AS or after is None or not after.digits:
        return False
    one_at_a_time = len(tokens[j - 1].text) == 1 and len(after.text) == 1
    return one_at_a_time or len(run) + 1 + len(after.text) >= _LONG_RUN


def merge_runs(tokens: list[Token]) -> list[Token]:
    """Runs of digit tokens, with joiners between them ("415-555", "(415) 555", "4111... 1111"),
    as one token."""
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if not t.digits and not (t.text == "(" and i + 1 < len(tokens) and tokens[i + 1].digits):
            out.append(t)
            i += 1
            continue
        run, start, end = "", t.start, t.end
        j = i
        while j < len(tokens):
            u = tokens[j]
            if u.digits:
                run += u.text
                end = u.end
                j += 1
            elif u.text in ("(", ")"):
                j += 1
            elif run and _misheard_digit(run, tokens, j):
                run += _HEARD_AS[u.text.lower()]
                j += 1
            elif (k := _joiner_end(tokens, j)) is not None:
                j = k
            else:
                break
        out.append(Token(run, start, end, digits=True) if run else t)
        i = max(j, i + 1)
    return out
