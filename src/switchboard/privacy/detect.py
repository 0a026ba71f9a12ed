"""PII in what callers say: card numbers, phone numbers, e-mail addresses, US social security
numbers, dates of birth, street addresses, names and other long digit strings.

Detection reads ASR output as callers speak: numbers in words or digits or both ("4111, one
one one one"), e-mail addresses spelled out ("j o h n at example dot com"), dates said the
long way ("the third of March, eighty-two"). Numbers are normalised first
(:mod:`switchboard.privacy.spoken`); phone numbers are checked with Google's libphonenumber
(``phonenumbers``), cards with the Luhn checksum. No NER model loads offline from PyPI, so
names are found only where the caller introduces themselves ("my name is ...").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import phonenumbers

from switchboard.privacy.spoken import Token, merge_runs, normalise

EntityType = Literal[
    "card", "phone", "email", "national_id", "date_of_birth", "address", "name", "account_number", "keypad"
]
ENTITY_TYPES: tuple[EntityType, ...] = (
    "card", "phone", "email", "national_id", "date_of_birth", "address", "name", "account_number",
)  # fmt: skip
# When two findings overlap, the more specific one names the span.
_PRIORITY = {t: i for i, t in enumerate(("keypad", "email", "card", "national_id", "phone", "date_of_birth", "address", "name", "account_number"))}


@dataclass(frozen=True)
class Entity:
    """A span of the original text and what it is."""

    type: str
    start: int
    end: int


MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("january", "february", "march", "april", "may", "june", "july", "august", "september",
         "october", "november", "december")
    )
}  # fmt: skip
_BIRTH = re.compile(r"\b(born|birth|birthdays?|dob|d\.o\.b)\b", re.I)  # Whisper: "my birthdays 1030"
# An insurance or member card is not a payment card: its number is an account number.
_CARD_CONTEXT = re.compile(
    r"\b(visa|master ?card|amex|american express|discover|credit|debit|pay|charge|"
    r"(?<!insurance )(?<!member )(?<!id )(?<!health )(?<!medicare )(?<!medicaid )(?<!benefits )card)\b",
    re.I,
)
_CARD_EXTRAS = {"cvv", "cvc", "expiry", "expiration", "expires", "code"}
_SSN_CONTEXT = re.compile(r"\b(social|ssn|ss|s\W{0,2}s\W{0,2}n|security number)\b", re.I)  # "S.S.N.", "S-S-N"
_SSN_WRITTEN = re.compile(r"\d{3}-\d{2}-\d{4}")
_PHONE_CONTEXT = re.compile(r"\b(phone|number|call|cell|mobile|reach|text|contact|line|landline|fax)\b", re.I)
# A seven-digit local number needs a word of phoning: "patient number 4821390" is not one.
_PHONING = re.compile(
    r"\b(phone|call|cell|mobile|reach|text|contact|line|landline|fax|area code|(?:my|your|the best|a good) number)\b", re.I
)
# The identifiers a front desk asks for besides cards, phones and IDs.
_ACCOUNT_CONTEXT = re.compile(
    r"\b(patient|member|membership|policy|account|acct|chart|record|mrn|reference|confirmation|claim|"
    r"order|invoice|customer|insurance|group|id)\b",
    re.I,
)
# Which of these a number belongs to when several are said: the one named last before it.
_CONTEXTS = {"card": _CARD_CONTEXT, "national_id": _SSN_CONTEXT, "phone": _PHONING, "account_number": _ACCOUNT_CONTEXT}
_STREET = {
    "street", "st", "avenue", "ave", "road", "rd", "boulevard", "blvd", "lane", "ln", "drive", "dr",
    "court", "ct", "way", "place", "pl", "terrace", "circle", "highway", "parkway", "square", "close",
}  # fmt: skip
_UNIT = {"apartment", "apt", "unit", "suite", "flat", "#"}
_TLDS = {"com", "org", "net", "edu", "gov", "io", "co", "uk", "us", "info", "biz", "me", "ca", "de", "ai"}
_EMAIL_JOIN = {"dot": ".", ".": ".", "underscore": "_", "dash": "-", "hyphen": "-", "-": "-"}
_INTRO = re.compile(
    r"\b(?:my name is|my name's|name is|this is|i am|i'm|it's)\s+((?:[A-Z][a-z'\-]+)(?:\s+[A-Z][a-z'\-]+){0,2})"
)
_NOT_NAMES = {
    "I", "The", "A", "An", "About", "Calling", "Just", "Not", "So", "Yes", "No", "Okay", "Sorry",
    "Here", "Still", "Looking", "Trying", "Going", "Hoping", "Wondering", "Really", "Very", "It",
    "That", "This", "My", "Your", "Our", "Thank", "Thanks", "Good", "Fine", "Great", "Sure",
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
}  # fmt: skip


# Everything but a name needs a number (in digits or words), an "at" or a "dot com", or a month.
_MAYBE_PII = re.compile(
    r"\d|@|\b(?:at|dot|com|net|org|e-?mail|zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"\w+teen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|double|triple|"
    r"first|second|third|fifth|eighth|ninth|twelfth|\w+th|january|february|march|april|may|"
    r"june|july|august|september|october|november|december)\b",
    re.I,
)


# A date needs a month's name, a numeric date or a word of birth.
_DATE_HINT = re.compile(
    r"\b(?:january|february|march|april|may|june|july|august|september|october|november|"
    r"december|born|birth|birthdays?|dob)\b|\d\s*[/-]\s*\d",
    re.I,
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _phone(digits: str, plus: bool) -> bool:
    try:
        if plus:
            return phonenumbers.is_valid_number(phonenumbers.parse("+" + digits, None))
        if len(digits) == 11 and digits[0] == "1" or len(digits) == 10:
            return phonenumbers.is_valid_number(phonenumbers.parse(digits, "US"))
    except phonenumbers.NumberParseException:
        return False
    return False


def detect(text: str, types: Iterable[str] = ENTITY_TYPES, known_digits: Iterable[str] = ()) -> list[Entity]:
    """The PII in ``text`` of the given types, as non-overlapping spans, in order.

    ``known_digits`` are strings the caller keyed (a patient number): wherever they are said
    or repeated (the agent reading them back), they are ``keypad``."""
    wanted = set(types)
    found: list[Entity] = []
    if "name" in wanted:
        found += [Entity("name", m.start(1), m.end(1)) for m in _INTRO.finditer(text) if _is_name(m.group(1))]
    if not _MAYBE_PII.search(text):  # most lines: no number, no "at", no month; nothing more to find
        return _resolved(found)
    words = normalise(text, merge_digits=False)
    dates = _date_spans(words) if _DATE_HINT.search(text) else []
    if "date_of_birth" in wanted and _DATE_HINT.search(text):
        births = _dates(text, words)
        found += births
        dates += [(e.start, e.end) for e in births]
    tokens = merge_runs(words)
    if "email" in wanted:
        found += _emails(text, tokens)
    # The day and year of a date are not an identifier ("March 3, 2027" is not account 32027).
    in_dates = {i for i, t in enumerate(tokens) if len(t.text) <= 8 and any(a <= t.start and t.end <= b for a, b in dates)}
    found += _digit_runs(text, tokens, wanted, [d for d in known_digits if len(d) >= 3], skip=in_dates)
    if "address" in wanted:
        found += _addresses(tokens)
    return _resolved(found)


def _is_name(words: str) -> bool:
    return words.split()[0] not in _NOT_NAMES


def _resolved(found: list[Entity]) -> list[Entity]:
    """Overlapping findings as one span, named by the most specific of them."""
    out: list[Entity] = []
    for e in sorted(found, key=lambda e: (e.start, -e.end)):
        if out and e.start < out[-1].end:
            last = out[-1]
            kind = min(last.type, e.type, key=lambda t: _PRIORITY[t])
            out[-1] = Entity(kind, last.start, max(last.end, e.end))
        else:
            out.append(e)
    return out


# A word the ASR heard for a digit just before a number ("for 111..." is "four one one one").
_HEARD_AS_DIGIT = {"for", "to", "too", "won", "ate"}
# Sixteen digits with a card's context, or fifteen and more in any: nothing else said at a
# front desk is that long, and Whisper often repeats or drops a group, breaking the checksum.
_CARD_ANYWAY_DIGITS = 15


def _digit_runs(
    text: str, tokens: list[Token], wanted: set[str], known: list[str], skip: frozenset[int] | set[int] = frozenset()
) -> list[Entity]:
    found: list[Entity] = []
    ssn_said = bool(_SSN_CONTEXT.search(text))
    for i, t in enumerate(tokens):
        if not t.digits or i in skip and not any(k in t.text for k in known):
            continue
        plus = i > 0 and tokens[i - 1].text.lower() in ("+", "plus")
        start = tokens[i - 1].start if plus else t.start
        if i > 0 and tokens[i - 1].text.lower() in _HEARD_AS_DIGIT and len(t.text) >= 3:
            start = tokens[i - 1].start
        kind = _number_kind(text, tokens, i, plus, ssn_said, known)
        if kind is not None and (kind == "keypad" or kind in wanted):
            found.append(Entity(kind, start, t.end))
        elif kind is not None and kind != "account_number" and "account_number" in wanted:
            found.append(Entity("account_number", start, t.end))
    return found


_MONEY_AFTER = re.compile(r"[\s,.]*(?:dollars?|bucks|cents|usd)\b", re.I)


def _money(text: str, t: Token) -> bool:
    """"$12,000", "twelve thousand dollars": an amount, not an identifier."""
    return text[max(0, t.start - 1) : t.start] == "$" or bool(_MONEY_AFTER.match(text, t.end))


# "..., that's my social", "... is the card": named after the number when not before it.
_AFTER_CHARS = 30


def _context_after(after: str) -> str | None:
    first = {kind: m.start() for kind, pattern in _CONTEXTS.items() if (m := pattern.search(after))}
    return min(first, key=lambda k: first[k]) if first else None


def _nearest_context(before: str) -> str | None:
    """The kind of number the words before it name last ("my social is ..., member number ...")."""
    last = {kind: max((m.end() for m in pattern.finditer(before)), default=-1) for kind, pattern in _CONTEXTS.items()}
    kind = max(last, key=lambda k: last[k])
    return kind if last[kind] >= 0 else None


def _number_kind(text: str, tokens: list[Token], i: int, plus: bool, ssn_said: bool, known: list[str]) -> str | None:
    """What the run of digits ``tokens[i]`` is, from its length, checksum and the words before it."""
    t = tokens[i]
    digits, n = t.text, len(t.text)
    before = text[max(0, t.start - 80) : t.start]
    context = _nearest_context(before) or _context_after(text[t.end : t.end + _AFTER_CHARS])
    if any(k in digits for k in known):
        return "keypad"
    if _money(text, t):
        return None
    long_card = n >= 13 and (luhn_valid(digits) or _CARD_CONTEXT.search(before)) or n >= _CARD_ANYWAY_DIGITS
    if long_card and not (context in ("national_id", "account_number") and not luhn_valid(digits)):
        return "card"
    if context == "national_id" and n > 10:
        return "national_id"  # said after "social", and the ASR repeated groups
    if context == "account_number" and n >= 4 and not (_phone(digits, plus) and _PHONING.search(before)):
        return "account_number"
    if 8 <= n <= 10 and ssn_said and context in ("national_id", None) and (n != 9 or _ssn_valid(digits)):
        return "national_id"  # 8 or 10: the ASR dropped or repeated a digit
    if 4 <= n < 13 and context == "card":
        return "card"  # what the ASR kept of a card number (or its last four)
    if 4 <= n < 8 and context == "national_id":
        return "national_id"
    if _phone(digits, plus) or (9 <= n <= 12 and _PHONE_CONTEXT.search(before)) or (5 <= n <= 12 and context == "phone"):
        return "phone"  # or what the ASR kept of one, said after "my cell is"
    if n == 9 and _SSN_WRITTEN.fullmatch(text[t.start : t.end]) and _ssn_valid(digits):
        return "national_id"
    if 3 <= n <= 4 and i > 0 and _after_card_extra(tokens, i):
        return "card"
    if n >= 5:
        return "account_number"
    return None


def _after_card_extra(tokens: list[Token], i: int) -> bool:
    """A card's security code or expiry ("the CVV is 123", "expiry 1227"); an area or zip code is not one."""
    return any(
        tokens[j].text.lower() in _CARD_EXTRAS and not (j > 0 and tokens[j - 1].text.lower() in _OTHER_CODES)
        for j in range(max(0, i - 3), i)
    )


_OTHER_CODES = {"area", "zip", "postal", "country", "promo", "discount"}


_EMAIL_CONTEXT = re.compile(r"\b(e-?mails?|mail|write to|send it to|send them to)\b", re.I)
# Where an address said after "my email is" starts: the words before it.
_EMAIL_LEAD = {"is", "to", "at", "it's", "its", "me", "email", "emails", "address", "use", ",", "mail"}
_MAX_FUSED_TOKENS = 8


def _emails(text: str, tokens: list[Token]) -> list[Entity]:
    found: list[Entity] = []
    for k, t in enumerate(tokens):
        if t.text.lower() not in ("at", "@") or k == 0:
            continue
        end = _domain_end(tokens, k + 1)
        start = _local_start(tokens, k - 1)
        if start is not None and end is None and _said_as_an_email(text, tokens, start):
            end = _label(tokens, k + 1)  # "my email is john at gmail": the ".com" unsaid, or lost
        if end is not None and start is not None:
            found.append(Entity("email", tokens[_spoken_local_start(tokens, start)].start, tokens[end].end))
    if not found and _EMAIL_CONTEXT.search(text):
        found += _fused_emails(tokens)
    return found


_EMAIL_IS = re.compile(r"\b(?:e-?mail(?: address)?(?: is|'s|:)|e-?mail me at)[\s,:]*$", re.I)


def _said_as_an_email(text: str, tokens: list[Token], start: int) -> bool:
    """Whether the words right before the local part introduce an e-mail address ("my email is")."""
    return bool(_EMAIL_IS.search(text, 0, tokens[start].start))


# Words of a local part said apart ("rachel green eighty-eight at ...") after the words that lead in.
_MAX_LOCAL_WORDS = 3


def _spoken_local_start(tokens: list[Token], start: int) -> int:
    """The first word of a local part said as several words ("mary jones at gmail dot com"):
    back from ``start`` to the word that leads into the address ("my email is", "email me at"),
    if one is that near; otherwise ``start``."""
    for j in range(start - 1, max(-1, start - 1 - _MAX_LOCAL_WORDS), -1):
        word = tokens[j].text.lower()
        if word in _EMAIL_LEAD:
            return j + 1
        if not tokens[j].text.isalnum() or word in ("or", "and") or tokens[j].digits and len(word) > 4:
            break  # another number said before it ("call me on 415 555 0144 or email ...")
    return start


def _fused_emails(tokens: list[Token]) -> list[Entity]:
    """An address whose "at" the ASR lost or fused ("bobedexample. com"): said after "email",
    it runs back from its top-level domain to the words that lead into it."""
    found: list[Entity] = []
    for k, t in enumerate(tokens):
        if k < 2 or t.text.lower() not in _TLDS or tokens[k - 1].text.lower() not in ("dot", "."):
            continue
        start = k - 2
        while start > 0 and k - start < _MAX_FUSED_TOKENS and tokens[start - 1].text.lower() not in _EMAIL_LEAD:
            start -= 1
        if tokens[start].text.isalnum():
            found.append(Entity("email", tokens[start].start, t.end))
    return found


def _label(tokens: list[Token], j: int) -> int | None:
    """The last token of a domain label starting at ``j`` (a word, digits or spelled letters)."""
    if j >= len(tokens) or not (tokens[j].text.isalnum()) or tokens[j].text.lower() in _EMAIL_JOIN:
        return None
    if len(tokens[j].text) == 1:  # spelled: "g m x"
        while j + 1 < len(tokens) and len(tokens[j + 1].text) == 1 and tokens[j + 1].text.isalnum():
            j += 1
        return j
    # said as words: "dental care dot org" (up to three, then the dot)
    for k in range(j + 1, min(j + _MAX_LOCAL_WORDS, len(tokens) - 1)):
        if not tokens[k].text.isalnum() or tokens[k].text.lower() in _EMAIL_JOIN:
            break
        if _dot_in_address(tokens, k + 1):
            return k
    return j


def _dot_in_address(tokens: list[Token], k: int) -> bool:
    """"dot", or a point with no space after it ("care.org"; "the shop. Me too" ends a sentence)."""
    word = tokens[k].text.lower()
    return word == "dot" or word == "." and k + 1 < len(tokens) and tokens[k + 1].start == tokens[k].end


def _domain_end(tokens: list[Token], j: int) -> int | None:
    last = _label(tokens, j)
    if last is None:
        return None
    if tokens[last].text.lower() in ("dotcom", "dotnet", "dotorg"):
        return last
    end = None
    while last + 2 < len(tokens) + 1 and last + 1 < len(tokens) and tokens[last + 1].text.lower() in ("dot", "."):
        nxt = _label(tokens, last + 2)
        if nxt is None:
            break
        last = nxt
        if tokens[last].text.lower() in _TLDS:
            end = last
    if last + 1 < len(tokens) and tokens[last + 1].text.lower() in ("dotcom", "dotnet", "dotorg"):
        end = last + 1
    return end


def _local_start(tokens: list[Token], j: int) -> int | None:
    def piece(j: int) -> int | None:
        """The first token of the local-part piece ending at ``j``."""
        if j < 0 or not tokens[j].text.isalnum() or tokens[j].text.lower() in _EMAIL_JOIN:
            return None
        if len(tokens[j].text) == 1 or tokens[j].digits:
            while j - 1 >= 0 and tokens[j - 1].text.isalnum() and (len(tokens[j - 1].text) == 1 or tokens[j - 1].digits):
                j -= 1
        return j

    start = piece(j)
    while start is not None and start >= 2 and tokens[start - 1].text.lower() in _EMAIL_JOIN:
        earlier = piece(start - 2)
        if earlier is None:
            break
        start = earlier
    return start


def _addresses(tokens: list[Token]) -> list[Entity]:
    found: list[Entity] = []
    for i, t in enumerate(tokens):
        if not t.digits or len(t.text) > 6:
            continue
        for j in range(i + 1, min(i + 6, len(tokens))):
            word = tokens[j].text.lower().rstrip(".")
            if word in _STREET and j > i + 1:
                end = j
                if j + 2 < len(tokens) and tokens[j + 1].text.lower() in _UNIT:
                    end = j + 2
                found.append(Entity("address", t.start, tokens[end].end))
                break
            if tokens[j].digits:
                break
    return found


def _dates(text: str, tokens: list[Token]) -> list[Entity]:
    """Dates of birth: a day and month (and year) said with a word of birth in the utterance,
    or a whole date before 2015 (nobody books a cleaning for 1982)."""
    low = [t.text.lower() for t in tokens]
    birth = bool(_BIRTH.search(text))
    found: list[Entity] = []
    i = 0
    while i < len(tokens):
        span = _date_at(tokens, i, low)
        if span is None:
            i += 1
            continue
        end, year = span
        if birth or (year is not None and year < 2015):
            found.append(Entity("date_of_birth", tokens[i].start, tokens[end].end))
        i = end + 1
    if birth:
        found += [e for e in _spoken_numeric_dates(tokens) if not any(e.start < f.end and f.start < e.end for f in found)]
    if birth and not found:
        found += _birth_years(tokens)
    return _one_date_each(text, sorted(found, key=lambda e: e.start))


_BETWEEN_PARTS = re.compile(r"[\s,.;]*(?:(?:on|the|and|of)[\s,.;]+)*")


def _date_spans(tokens: list[Token]) -> list[tuple[int, int]]:
    """Every date said, of birth or not: where each starts and ends in the text."""
    low = [t.text.lower() for t in tokens]
    spans, i = [], 0
    while i < len(tokens):
        span = _date_at(tokens, i, low)
        if span is None:
            i += 1
            continue
        spans.append((tokens[i].start, tokens[span[0]].end))
        i = span[0] + 1
    return spans


def _one_date_each(text: str, dates: list[Entity]) -> list[Entity]:
    """Parts of one date said apart ("nineteen sixty-two, May the tenth") as one span."""
    out: list[Entity] = []
    for e in dates:
        if out and _BETWEEN_PARTS.fullmatch(text, out[-1].end, e.start):
            out[-1] = Entity("date_of_birth", out[-1].start, max(out[-1].end, e.end))
        else:
            out.append(e)
    return out


def _spoken_numeric_dates(tokens: list[Token]) -> list[Entity]:
    """A date of birth said as numbers, the way forms write it: "three fifteen eighty-eight",
    "oh four, twelve, eighty-three", "ten thirty nineteen seventy-one" (or "31588" as the ASR
    may write it): month, day and year, or day, month and year."""
    return [
        Entity("date_of_birth", run.start, run.end)
        for run in merge_runs(tokens)
        if run.digits and 4 <= len(run.text) <= 8 and _reads_as_date(run.text)
    ]


def _reads_as_date(digits: str) -> bool:
    for first in (1, 2):
        for second in (1, 2):
            year = digits[first + second :]
            if len(year) not in (2, 4) or len(year) == 4 and not "1900" <= year <= "2099":
                continue
            a, b = int(digits[:first]), int(digits[first : first + second])
            if 1 <= a <= 12 and 1 <= b <= 31 or 1 <= a <= 31 and 1 <= b <= 12:
                return True
    return False


def _birth_years(tokens: list[Token]) -> list[Entity]:
    """"born in 1975", "born June 1975": a year (with its month) where birth was mentioned."""
    found: list[Entity] = []
    for i, t in enumerate(tokens):
        if t.digits and len(t.text) == 4 and t.text[:2] in ("19", "20"):
            start = i - 1 if i > 0 and tokens[i - 1].text.lower() in MONTHS else i
            found.append(Entity("date_of_birth", tokens[start].start, t.end))
    return found


def _day(t: Token) -> bool:
    return (t.digits or t.ordinal) and t.text.isdigit() and 1 <= int(t.text) <= 31


def _date_at(tokens: list[Token], i: int, low: list[str]) -> tuple[int, int | None] | None:
    """The last token of a date starting at ``i``, and its year if said."""
    n = len(tokens)
    j = i + 1 if low[i] == "the" else i
    if j < n and _day(tokens[j]) and not (j + 1 < n and low[j + 1] == "/"):
        k = j + 1
        if k < n and low[k] in ("of", "on", "in"):
            k += 1
        if k < n and low[k] in MONTHS:
            return _year(tokens, k)
        return None
    if low[i] in MONTHS:
        k = i + 1
        if k < n and low[k] == "the":
            k += 1
        if k < n and _day(tokens[k]):
            return _year(tokens, k)
        return None
    # 3/3/82, 03-03-1982
    numeric = (
        tokens[i].digits and i + 4 < n and low[i + 1] in ("/", "-") and low[i + 3] == low[i + 1]
        and tokens[i + 2].digits and tokens[i + 4].digits
    )  # fmt: skip
    if numeric and 1 <= int(tokens[i].text) <= 31 and 1 <= int(tokens[i + 2].text) <= 31:
        year = int(tokens[i + 4].text)
        return i + 4, year + (1900 if 30 <= year < 100 else 2000 if year < 30 else 0)
    return None


def _year(tokens: list[Token], k: int) -> tuple[int, int | None]:
    """After the day or month at ``k``: a year ("1982", "eighty-two", "nineteen eighty two")."""
    n = len(tokens)
    j = k + 1
    if j < n and tokens[j].digits and not tokens[j].ordinal:
        text = tokens[j].text
        if len(text) == 2 and j + 1 < n and tokens[j + 1].digits and len(tokens[j + 1].text) in (1, 2) and text in ("19", "20"):
            return j + 1, int(text + tokens[j + 1].text.zfill(2))
        if len(text) == 4:
            return j, int(text)
        if len(text) == 2:
            year = int(text)
            return j, year + (1900 if year >= 30 else 2000)
    return k, None
