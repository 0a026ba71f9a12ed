"""End to end over Twilio media streams: an agent per number, silence re-prompts, the time
limit, the keypad.

One agent server answers every test: the default test agent, and the agents in
tests/agents/numbers picked by the number the simulated caller dials.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import REPO, Server, replied, start_agent_server, wait_for
from switchboard.agent.intents import normalize
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary

AGENTS = REPO / "tests" / "agents"
_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_heard(text: str | None) -> str:
    """The digits in a transcript, whether Whisper wrote them as numerals or words."""
    words = (text or "").lower().replace(",", " ").replace(".", " ").split()
    out = []
    for word in words:
        if word in _DIGIT_WORDS:
            out.append(str(_DIGIT_WORDS.index(word)))
        else:
            out.extend(ch for ch in word if ch.isdigit())
    return "".join(out)


CONTROL_LINE = "+15005550101"  # tests/agents/numbers/call_control.yaml
SHORT_LINE = "+15005550102"  # tests/agents/numbers/short_calls.yaml


@pytest.fixture(scope="module")
def agents_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of tests/agents/numbers that a test may edit while the server runs."""
    return Path(shutil.copytree(AGENTS / "numbers", tmp_path_factory.mktemp("agents") / "numbers"))


@pytest.fixture(scope="module")
def control_agent(agents_dir: Path) -> Iterator[Server]:
    server = start_agent_server(
        env={"SWITCHBOARD_AGENTS_DIR": str(agents_dir), "SWITCHBOARD_AGENTS_RELOAD_SECS": "0.2"}
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def short_agent(control_agent: Server) -> Server:
    return control_agent


@pytest.mark.parametrize(
    ("dialed", "greeting", "agent"),
    [
        (CONTROL_LINE, "Hello, this is the call control line.", "Call control test agent"),
        (SHORT_LINE, "Hello, this line is short.", "Short call test agent"),
        (
            "+15005550199",
            "Hello, this is the test line. Please say something.",
            "Test agent for the speech clips",
        ),
    ],
)
async def test_the_dialed_number_picks_the_agent(
    control_agent: Server, dialed: str, greeting: str, agent: str
) -> None:
    script = CallScript(to_number=dialed, turns=[])
    result = await run_call(control_agent.base_url, script, transcribe=True)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert replied(result.greeting.transcript, greeting), summary
    assert (await record_of(control_agent, result.call_sid))["agent"] == agent


async def record_of(server: Server, call_sid: str) -> dict:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.base_url}/calls/{call_sid}")
    response.raise_for_status()
    return response.json()


def metric(server: Server, name: str, labels: str) -> float:
    exposition = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    line = next((x for x in exposition.splitlines() if x.startswith(f"{name}{{{labels}}}")), None)
    return float(line.split()[-1]) if line else 0.0


async def test_a_silent_caller_is_reprompted_then_hung_up_on(control_agent: Server) -> None:
    before = metric(control_agent, "calls_ended_by_agent_total", 'reason="idle"')
    script = CallScript(
        to_number=CONTROL_LINE,
        turns=[
            CallerTurn(reply_timeout_ms=6000),  # silence: the re-prompt is the reply
            CallerTurn(reply_timeout_ms=6000, hangup_expected=True),  # silence again: goodbye
        ],
    )
    result = await run_call(control_agent.base_url, script, transcribe=True)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert replied(result.turns[0].transcript, "Are you still there?"), summary
    assert replied(result.turns[1].transcript, "I will hang up now. Goodbye."), summary
    # The re-prompt came about 3 s after the greeting ended, not at once and not much later.
    gap = result.turns[0].agent_audio_start_s - (
        result.greeting.start_s + result.greeting.duration_s
    )
    assert 2.5 <= gap <= 4.5, summary
    record = await record_of(control_agent, result.call_sid)
    assert record["ended_by"] == "idle"
    assert [e["event"] for e in record["events"]] == ["reprompt", "idle_hangup"]
    assert metric(control_agent, "calls_ended_by_agent_total", 'reason="idle"') == before + 1


async def test_a_call_reaching_its_time_limit_is_closed_politely(short_agent: Server) -> None:
    script = CallScript(
        to_number=SHORT_LINE, turns=[CallerTurn(reply_timeout_ms=9000, hangup_expected=True)]
    )
    result = await run_call(short_agent.base_url, script, transcribe=True)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert replied(result.turns[0].transcript, "Our time is up. Thank you for calling, goodbye."), (
        summary
    )
    assert 5.5 <= result.turns[0].agent_audio_start_s <= 7.5, summary
    record = await record_of(short_agent, result.call_sid)
    assert record["ended_by"] == "max_duration"
    assert record["events"][0]["event"] == "max_duration"


async def test_keypad_menu_routes_digits_and_collects_an_account_number(
    control_agent: Server,
) -> None:
    script = CallScript(
        to_number=CONTROL_LINE,
        turns=[
            CallerTurn(dtmf="1"),  # menu: cards
            CallerTurn(dtmf="2"),  # menu: account, which collects digits
            CallerTurn(dtmf="4521#"),
            CallerTurn(dtmf="9", hangup_expected=True),  # menu: goodbye
        ],
    )
    result = await run_call(control_agent.base_url, script, transcribe=True)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    replies = [t.transcript for t in result.turns]
    assert replied(replies[0], "You asked about playing cards."), summary
    assert replied(replies[1], "Please type your account number, then press pound."), summary
    assert normalize(replies[2] or "").startswith("thank you i have"), summary
    assert digits_heard(replies[2]) == "4521", summary
    assert replied(replies[3], "Thank you for calling, goodbye."), summary
    record = await record_of(control_agent, result.call_sid)
    keyed = [(e["event"], e.get("intent"), e.get("digits")) for e in record["events"]]
    assert keyed == [
        ("keypad", "cards", None),
        ("keypad", "account", None),
        ("digits", "account", "4521"),
        ("keypad", "goodbye", None),
    ]
    assert record["ended_by"] == "agent"


async def test_digit_collection_times_out_and_bad_keys_are_answered_or_dropped(
    control_agent: Server,
) -> None:
    bad_before = metric(control_agent, "telephony_bad_messages_total", 'provider="twilio"')
    junk = [
        '{"event": "dtmf", "streamSid": "MZ0", "dtmf": {"track": "inbound_track", "digit": "X"}}',
        '{"event": "dtmf", "streamSid": "MZ0", "dtmf": {"track": "inbound_track", "digit": "12"}}',
        '{"event": "dtmf", "streamSid": "MZ0", "dtmf": "5"}',
        '{"event": "dtmf", "streamSid": "MZ0"}',
    ]
    script = CallScript(
        to_number=CONTROL_LINE,
        raw_messages_after_start=junk,
        turns=[
            CallerTurn(dtmf="7"),  # not on the menu
            CallerTurn(dtmf="2"),
            CallerTurn(dtmf="38", reply_timeout_ms=6000),  # no terminator: the 3 s timeout ends it
        ],
    )
    result = await run_call(control_agent.base_url, script, transcribe=True)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert replied(result.turns[0].transcript, "That key does nothing."), summary
    assert normalize(result.turns[2].transcript or "").startswith("thank you i have"), summary
    assert digits_heard(result.turns[2].transcript) == "38", summary
    assert result.turns[2].voice_to_voice_ms >= 2500, summary  # waited for the timeout
    record = await record_of(control_agent, result.call_sid)
    digits = [e for e in record["events"] if e["event"] == "digits"]
    assert digits == [{**digits[0], "digits": "38", "timed_out": True}]
    assert record["events"][0] == {
        **record["events"][0],
        "event": "keypad",
        "digit": "7",
        "intent": None,
    }
    assert metric(
        control_agent, "telephony_bad_messages_total", 'provider="twilio"'
    ) == bad_before + len(junk)


RELOADED = """version: 1
name: Reloaded agent
numbers: ["+15005550103"]
greeting: {greeting}
fallback: Sorry?
"""


async def test_agent_files_are_reloaded_while_serving_and_a_bad_edit_keeps_the_last_good_one(
    control_agent: Server, agents_dir: Path
) -> None:
    path = agents_dir / "reloaded.yaml"
    path.write_text(RELOADED.format(greeting="This agent was added while the server ran."))
    script = CallScript(to_number="+15005550103", turns=[])
    result = await run_call(control_agent.base_url, script, transcribe=True)
    assert replied(result.greeting.transcript, "This agent was added while the server ran."), (
        format_summary(result)
    )

    path.write_text(RELOADED.format(greeting="Broken.") + "silence: {max_reprompts: many}\n")
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))  # a new mtime even within one tick
    health = wait_for(
        lambda: (
            (body := httpx.get(f"{control_agent.base_url}/health", timeout=5).json()).get(
                "agent_config_errors"
            )
            and body
        ),
        what="the bad edit to be noticed",
    )
    assert health["agent_config_errors"] == ["reloaded.yaml"]
    result = await run_call(control_agent.base_url, script, transcribe=True)
    assert replied(result.greeting.transcript, "This agent was added while the server ran."), (
        format_summary(result)
    )
    assert "silence.max_reprompts" in control_agent.log()
