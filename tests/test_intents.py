"""Intent matching: whole words, first match wins, fallback otherwise."""

from switchboard.agent.config import load_agent_config
from switchboard.agent.intents import IntentMatcher, normalize
from switchboard.settings import DEFAULT_AGENT_CONFIG


def matcher() -> IntentMatcher:
    return IntentMatcher(load_agent_config(DEFAULT_AGENT_CONFIG))


def test_matches_receptionist_intents() -> None:
    m = matcher()
    assert m.match("What are your opening hours on Saturday?").name == "hours"
    assert m.match("I'd like to book a cleaning").name == "appointment"
    assert m.match("Question about my bill.").name == "billing"
    assert m.match("Can I speak to a person please").name == "transfer"
    goodbye = m.match("OK, thank you, goodbye!")
    assert goodbye.name == "goodbye" and goodbye.end_call


def test_unknown_request_gets_fallback() -> None:
    result = matcher().match("Do you sell bicycles?")
    assert result.intent is None
    assert result.reply.startswith("Sorry")
    assert not result.end_call


def test_phrases_match_whole_words_only() -> None:
    # "pay" must not match inside "paying"'s neighbour "papaya"; "open" not inside "opener".
    assert matcher().match("papaya can opener").name == "fallback"


def test_normalize_drops_punctuation_and_case() -> None:
    assert normalize("  That’s ALL, folks! ") == "that's all folks"
