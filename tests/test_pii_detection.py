"""PII detection and record redaction, in-process: the rules on text as Whisper writes what
callers say, the agent's ``redaction`` settings, and what a redacted record keeps."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from loguru import logger

from switchboard.agent.config import AgentConfig
from switchboard.call_log import DigitsCollected, KeypadPress, ToolCall, Turn
from switchboard.errors import ConfigError
from switchboard.observability.logging import call_context, configure_logging
from switchboard.privacy.detect import detect, luhn_valid
from switchboard.privacy.spoken import normalise
from switchboard.privacy.text import redact_text
from switchboard.records.models import StoredCall, TranscriptEntry
from switchboard.records.redaction import redact_call, withheld


def kinds(text: str) -> list[tuple[str, str]]:
    return [(e.type, text[e.start : e.end]) for e in detect(text)]


@pytest.mark.parametrize(
    ("said", "digits"),
    [
        ("four one one one, one one one one", "41111111"),
        ("double five, triple seven", "55777"),
        ("four fifteen, five five five, oh one three four", "4155550134"),
        ("(415) 555-0134", "4155550134"),
        ("two hundred and five", "205"),
    ],
)
def test_spoken_and_written_numbers_become_one_run_of_digits(said: str, digits: str) -> None:
    [run] = [t for t in normalise(said) if t.digits]
    assert run.text == digits
    assert said[run.start : run.end].split()[0] == said.split()[0]  # the span is the original words


def test_oh_is_zero_only_beside_other_digits() -> None:
    assert [t.text for t in normalise("Oh, hi there")][0] == "Oh"


@pytest.mark.parametrize(
    ("heard", "kind"),
    [
        # Whisper tiny's output for Piper reading the benchmark's utterances (benchmarks/pii.py)
        ("My card number is for 111 111 111 111 111 111 111 111", "card"),
        ("Sure, the number on the card is 4-0-12-888-888-888-1881.", "card"),
        ("My master card is 51051051051051505100", "card"),
        ("It's an American Express, 3782 82246 310005", "card"),
        ("It's 4111 1111 1111 1111", "card"),  # Luhn, no context
        ("You can reach me at 415-5550134", "phone"),
        ("Call me back on 650-5550-1000.", "phone"),  # a digit too many, said as a phone number
        ("My cell is 312-55-0147. Thanks.", "phone"),  # written like an SSN, said as a phone
        ("My SSN is 273-64-9183.", "national_id"),
        ("My social is five three six, two two, eight seven four five.", "national_id"),
        ("It's j o h n at example dot com.", "email"),
        ("My email is J-O-H-N at example.com", "email"),
        ("You can write to mike.brown@company.com.", "email"),
        ("Send it to david underscore lee at yahoo dot com.", "email"),
        ("My birthday is the third of March, eighty-two.", "date_of_birth"),
        ("I was born on March 3rd, 1982.", "date_of_birth"),
        ("Date of birth 3/3/1982", "date_of_birth"),
        ("My address is 123 Main Street, apartment 5.", "address"),
        ("Hi, my name is John Smith and I need an appointment.", "name"),
        ("Please use patient number 48213907.", "account_number"),
    ],
)
def test_each_kind_is_found_as_whisper_writes_it(heard: str, kind: str) -> None:
    assert [k for k, _ in kinds(heard)] == [kind], kinds(heard)


@pytest.mark.parametrize(
    "heard",
    [
        "I'd like to book a cleaning for Tuesday at ten in the morning.",
        "The last bill was $120.",
        "Can I come in at 3.30 this afternoon?",
        "I need to cancel my appointment on the 5th of May.",  # no year, no birth: an appointment
        "This is about my bill.",
        "I'm at home now, dot, I'll call back.",
        "My kids are 7 and 9, and we have 2 cats.",
    ],
)
def test_ordinary_requests_hold_no_pii(heard: str) -> None:
    assert [k for k, _ in kinds(heard) if k != "account_number"] == []


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_a_redacted_span_is_the_words_the_caller_said() -> None:
    text = "Sure. My card is four one one one, one one one one, one one one one, one one one one. Thanks!"
    assert redact_text(text, ["card"]) == "Sure. My card is [CARD]. Thanks!"
    assert redact_text("call me on 415 555 0134", ["card"]) == "call me on 415 555 0134"  # not asked for


def test_keyed_digits_are_redacted_wherever_they_are_read_back() -> None:
    text = "Thank you. I have patient number 7 3 9 1 4. How can I help?"
    assert redact_text(text, [], known_digits=["73914"]) == "Thank you. I have patient number [KEYPAD]. How can I help?"


def agent(**redaction) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "name": "front desk",
            "greeting": "Hello.",
            "fallback": "Sorry?",
            "intents": [
                {"name": "patient_number", "phrases": ["patient number"], "reply": "Key it in.",
                 "collect_digits": {"max_digits": 10}},
                {"name": "extension", "phrases": ["extension"], "reply": "Which extension?",
                 "collect_digits": {"max_digits": 4, "pii": False}},
            ],
            "redaction": {"enabled": True, **redaction},
        }
    )  # fmt: skip


def a_call() -> StoredCall:
    return StoredCall(
        call_id="call-pii",
        agent="front desk",
        ingress="twilio",
        started_at=dt.datetime.now(dt.UTC),
        outcome="completed",
        transcript=[
            TranscriptEntry(role="user", text="My card is 4111 1111 1111 1111 and my email is j o h n at example dot com", t=1.0),
            TranscriptEntry(role="agent", text="Thank you. I have patient number 7 3 9 1 4.", t=5.0),
        ],
        turns=[Turn(transcript="My card is 4111 1111 1111 1111 and my email is j o h n at example dot com")],
        events=[
            KeypadPress(digit="4", intent="patient_number"),
            DigitsCollected(intent="patient_number", digits="73914"),
            DigitsCollected(intent="extension", digits="204"),
            ToolCall(tool="lookup", arguments={"patient": "73914"}, ok=True, result={"dob": "born March 3rd, 1982", "id": 7391400}),
        ],
    )


def test_a_redacted_record_keeps_no_pii_nor_keyed_digits_but_what_an_intent_keeps() -> None:
    redacted, found = redact_call(a_call(), agent())
    stored = redacted.model_dump_json()
    for secret in ("4111", "j o h n", "73914", "7 3 9 1 4", "1982"):
        assert secret not in stored, secret
    assert redacted.transcript[0].text == "My card is [CARD] and my email is [EMAIL]"
    assert redacted.turns[0].transcript == redacted.transcript[0].text
    assert redacted.events[0].digit == "[KEYPAD]" and redacted.events[1].digits == "[KEYPAD]"
    assert redacted.events[2].digits == "204"  # collect_digits.pii: false
    assert redacted.events[3].arguments == {"patient": "[KEYPAD]"}
    assert found["card"] == 2 and found["email"] == 2 and found["keypad"] >= 3


def test_an_agent_chooses_the_types_and_whether_keys_are_pii() -> None:
    redacted, _found = redact_call(a_call(), agent(entities=["email"], keypad_digits=False))
    assert "4111 1111 1111 1111" in redacted.transcript[0].text and "[EMAIL]" in redacted.transcript[0].text
    assert redacted.events[1].digits == "73914"


def test_a_withheld_record_keeps_no_words_digits_or_audio() -> None:
    kept = withheld(a_call())
    assert kept.transcript == [] and kept.tool_calls == [] and kept.recording is None
    assert "4111" not in kept.model_dump_json() and "73914" not in kept.model_dump_json()


@pytest.mark.parametrize(
    ("redaction", "field"),
    [
        ({"entities": ["card", "passport"]}, "redaction.entities.1"),
        ({"entities": ["card", "card"]}, "redaction.entities"),
        ({"audio_mask": "beep"}, "redaction.audio_mask"),
        ({"keypad": True}, "redaction.keypad"),
    ],
)
def test_a_wrong_redaction_setting_is_refused_naming_its_field(tmp_path, redaction: dict, field: str) -> None:
    import yaml

    from switchboard.agent.config import load_agent_config

    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"name": "a", "greeting": "Hi.", "fallback": "Sorry?", "redaction": redaction}))
    with pytest.raises(ConfigError, match=re.escape(f"{field}:")):
        load_agent_config(path)


def test_the_example_receptionist_redacts_every_type() -> None:
    from switchboard.agent.config import load_agent_config
    from switchboard.settings import DEFAULT_AGENT_CONFIG

    redaction = load_agent_config(DEFAULT_AGENT_CONFIG).redaction
    assert redaction.enabled and redaction.keypad_digits and redaction.recording
    assert set(redaction.entities) == {"card", "phone", "email", "national_id", "date_of_birth", "address", "name", "account_number"}


def test_debug_lines_of_a_call_are_redacted_and_other_lines_left_alone() -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "text", stream=out)
    try:
        with call_context("call-log"):
            logger.debug("LocalWhisperSTTService#0: transcript [my card is 4111 1111 1111 1111]")
            logger.debug("LocalWhisperSTTService#0: transcript [3 7 8 2]")  # a card's first group
            logger.info("call-log: call record saved with 123456 bytes of audio")
        logger.debug("worker started on port 45123")
        # As Piper logs from its synthesis thread: its module's name, outside the call's context.
        piper_line = "text=I have patient number 4111 1111 1111 1111., phonemes=[['f', 'ɔ', 'ɹ']]"
        exec("logger.debug(line)", {"__name__": "piper.voice", "logger": logger, "line": piper_line})
    finally:
        configure_logging("INFO", "text")
    lines = out.getvalue()
    assert "transcript [my card is [CARD]]" in lines and "4111" not in lines
    assert "transcript [[DIGITS]]" in lines
    assert "123456 bytes" in lines and "port 45123" in lines
    assert "text=I have patient number [CARD]., phonemes=[withheld]" in lines  # Piper's, out of context


def test_the_workers_view_of_a_call_holds_no_more_pii_than_its_record() -> None:
    from switchboard.call.record import CallRecord
    from switchboard.call_log import CallLog

    log = CallLog()
    log.add(Turn(transcript="my card is 4111 1111 1111 1111"))
    log.add(KeypadPress(digit="4", intent="patient_number"))
    log.add(DigitsCollected(intent="patient_number", digits="73914"))
    log.add(DigitsCollected(intent="extension", digits="204"))
    front_desk = agent()
    record = CallRecord(call_sid="CAv", stream_sid="MZv", log=log, redaction=front_desk.redaction,
                        digits_kept_for=frozenset({"extension"}))  # fmt: skip
    view = record.view()
    assert view["turns"][0]["transcript"] == "my card is [CARD]"
    assert [e.get("digit") or e.get("digits") for e in view["events"]] == ["[KEYPAD]", "[KEYPAD]", "204"]
    unredacted = CallRecord(call_sid="CAw", stream_sid="MZw", log=log).view()
    assert unredacted["turns"][0]["transcript"] == "my card is 4111 1111 1111 1111"


def test_a_number_said_in_groups_across_turns_is_redacted_as_one() -> None:
    from switchboard.privacy.text import redact_lines

    lines = ["It's an American Express.", "3 7 8 2", "82246", "310005", "What are your hours?"]
    assert redact_lines(lines) == ["It's an American Express.", "[CARD]", "[CARD]", "[CARD]", "What are your hours?"]


@pytest.mark.parametrize(
    ("heard", "kind"),
    [
        ("My email address is SarahandOutlook. com.", "email"),  # "at" fused, and no digit at all
        ("sure the number on the card is 4-0-1-2-8-8-8-8-8-", "card"),  # what the STT kept of it
    ],
)
def test_what_the_stt_kept_of_an_entity_is_still_found(heard: str, kind: str) -> None:
    assert [k for k, _ in kinds(heard)] == [kind], kinds(heard)
