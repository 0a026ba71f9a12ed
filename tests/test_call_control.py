"""End to end over Twilio media streams: an agent per number, silence re-prompts, the time
limit, the keypad, digits sent to a remote phone menu.

One agent server answers every test (conftest's session-wide signed agent): the default test
agent, and the agents in tests/agents/numbers picked by the number the simulated caller dials. What the agent said is
read from the call's stored record; the caller's side gives when it heard audio, and the
tones it heard (tests/test_call_controller.py covers the same logic in-process, timed exactly).
"""

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import (
    OPERATOR,
    TOOL_SECRET,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    Server,
    SignedAgent,
    agent_lines,
    metric,
    stored_call,
    wait_for,
)
from switchboard.agent.tools import SIGNATURE_HEADER, signature
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary


def call_line(agent: Server, script: CallScript):
    """A signed call to the call-control agent."""
    return run_call(
        agent.base_url, script, transcribe=False, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID
    )


async def said_on(result) -> list[str]:
    """What the agent said on the call, greeting first (from its stored record)."""
    return agent_lines(await stored_call(result.call_sid))


ACCOUNT_SID, AUTH_TOKEN = TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
CONTROL_LINE = "+15005550101"  # tests/agents/numbers/call_control.yaml
SHORT_LINE = "+15005550102"  # tests/agents/numbers/short_calls.yaml


@pytest.fixture(scope="module")
def agents_dir(signed_agent: SignedAgent) -> Path:
    """The server's agents directory, which a test may edit while it runs."""
    return signed_agent.agents_dir


@pytest.fixture(scope="module")
def twilio_api(signed_agent: SignedAgent) -> Server:
    """``switchboard emulate twilio``: the REST API the agent transfers and hangs up through."""
    return signed_agent.twilio


@pytest.fixture(scope="module")
def control_agent(signed_agent: SignedAgent) -> Server:
    return signed_agent.server


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
    result = await call_line(control_agent, script)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.greeting is not None, summary
    assert await said_on(result) == [greeting]
    assert (await record_of(control_agent, result.call_sid))["agent"] == agent


async def record_of(server: Server, call_sid: str) -> dict:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.base_url}/calls/{call_sid}", headers=OPERATOR)
    response.raise_for_status()
    return response.json()


def twilio_call(twilio_api: Server, sid: str) -> dict | None:
    response = httpx.get(f"{twilio_api.base_url}/emulator/calls/{sid}", timeout=5)
    return response.json() if response.status_code == 200 else None


def emulator_requests(twilio_api: Server) -> list[dict]:
    return httpx.get(f"{twilio_api.base_url}/stats", timeout=5).json()["items"]


async def test_a_silent_caller_is_reprompted_then_hung_up_on(control_agent: Server) -> None:
    before = metric(control_agent.base_url, "calls_ended_by_agent_total", reason="idle")
    script = CallScript(
        to_number=CONTROL_LINE,
        turns=[
            CallerTurn(reply_timeout_ms=6000),  # silence: the re-prompt is the reply
            CallerTurn(reply_timeout_ms=6000, hangup_expected=True),  # silence again: goodbye
        ],
    )
    result = await call_line(control_agent, script)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert (await said_on(result))[1:] == ["Are you still there?", "I will hang up now. Goodbye."]
    # The re-prompt came about 3 s after the greeting ended, not at once and not much later.
    gap = result.turns[0].agent_audio_start_s - (
        result.greeting.start_s + result.greeting.duration_s
    )
    assert 2.5 <= gap <= 4.5, summary
    record = await record_of(control_agent, result.call_sid)
    assert record["ended_by"] == "idle"
    assert [e["event"] for e in record["events"]] == ["reprompt", "idle_hangup"]
    assert metric(control_agent.base_url, "calls_ended_by_agent_total", reason="idle") == before + 1


async def test_a_call_reaching_its_time_limit_is_closed_politely(short_agent: Server) -> None:
    script = CallScript(
        to_number=SHORT_LINE, turns=[CallerTurn(reply_timeout_ms=9000, hangup_expected=True)]
    )
    result = await call_line(short_agent, script)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert (await said_on(result))[1:] == ["Our time is up. Thank you for calling, goodbye."]
    assert 5.5 <= result.turns[0].agent_audio_start_s <= 7.5, summary
    record = await record_of(short_agent, result.call_sid)
    assert record["ended_by"] == "max_duration"
    assert record["events"][0]["event"] == "max_duration"


async def test_keypad_menu_routes_digits_and_collects_an_account_number(
    control_agent: Server, twilio_api: Server
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
    result = await call_line(control_agent, script)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert all(t.agent_audio_start_s is not None for t in result.turns), summary
    assert (await said_on(result))[1:] == [
        "You asked about playing cards.",
        "Please type your account number, then press pound.",
        "Thank you, I have 4 5 2 1.",
        "Thank you for calling, goodbye.",
    ]
    record = await record_of(control_agent, result.call_sid)
    keyed = [(e["event"], e.get("intent"), e.get("digits")) for e in record["events"]]
    assert keyed == [
        ("keypad", "cards", None),
        ("keypad", "account", None),
        ("digits", "account", "4521"),
        ("keypad", "goodbye", None),
    ]
    assert record["ended_by"] == "agent"
    # With credentials the agent hangs up through the REST API, as Pipecat's serializer does.
    hung_up = wait_for(lambda: twilio_call(twilio_api, result.call_sid), what="the REST hang-up")
    assert hung_up["status"] == "completed"


async def test_an_intent_sends_digits_and_the_caller_hears_exactly_those_tones(
    control_agent: Server,
) -> None:
    before = metric(control_agent.base_url, "dtmf_sent_total", source="intent")
    script = CallScript(to_number=CONTROL_LINE, turns=[CallerTurn(dtmf="3")])  # menu: pharmacy
    result = await call_line(control_agent, script)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert (await said_on(result))[1] == "Dialling the pharmacy line for you."
    # In-band tones through the media stream: the w is a pause, not a key.
    assert result.digits_heard == "142#", summary
    record = await record_of(control_agent, result.call_sid)
    sent = [e for e in record["events"] if e["event"] == "send_digits"]
    assert sent == [{**sent[0], "digits": "1w42#", "source": "intent"}]
    assert metric(control_agent.base_url, "dtmf_sent_total", source="intent") == before + 1


async def test_a_call_without_sent_digits_hears_none(control_agent: Server) -> None:
    script = CallScript(to_number=CONTROL_LINE, turns=[CallerTurn(dtmf="1")])  # menu: cards
    result = await call_line(control_agent, script)
    assert result.outcome == CallOutcome.COMPLETED, format_summary(result)
    assert result.turns[0].agent_audio_start_s is not None  # the agent spoke
    assert result.digits_heard == ""


async def test_digit_collection_times_out_and_bad_keys_are_answered_or_dropped(
    control_agent: Server,
) -> None:
    bad_before = metric(control_agent.base_url, "telephony_bad_messages_total", provider="twilio")
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
    result = await call_line(control_agent, script)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert (await said_on(result))[1:4] == [  # a silence re-prompt may follow on a slow hang-up
        "That key does nothing.",
        "Please type your account number, then press pound.",
        "Thank you, I have 3 8.",
    ]
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
    bad_after = metric(control_agent.base_url, "telephony_bad_messages_total", provider="twilio")
    assert bad_after == bad_before + len(junk)


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
    result = await call_line(control_agent, script)
    assert await said_on(result) == ["This agent was added while the server ran."]

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
    result = await call_line(control_agent, script)
    assert await said_on(result) == ["This agent was added while the server ran."]
    assert "silence.max_reprompts" in control_agent.log()


async def test_a_transfer_redirects_the_call_to_a_dial_and_records_the_answer(
    control_agent: Server, twilio_api: Server
) -> None:
    answered_before = metric(control_agent.base_url, "call_transfers_total", outcome="answered")
    script = CallScript(to_number=CONTROL_LINE, turns=[CallerTurn(dtmf="0", hangup_expected=True)])
    result = await call_line(control_agent, script)
    summary = format_summary(result)
    # The agent says its line, then its side of the stream ends: Twilio now runs the call.
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert (await said_on(result))[1:] == ["Putting you through to the front desk."]
    call = wait_for(
        lambda: (c := twilio_call(twilio_api, result.call_sid)) and c["dialed"] and c,
        what="the redirect",
    )
    assert "<Dial" in call["twiml"][0] and "<Number>+15005550200</Number>" in call["twiml"][0]
    assert call["dialed"][0]["outcome"] == "completed"
    assert call["status"] != "completed", "a transferred call must not be hung up by the agent"

    def transferred() -> dict | None:
        record = httpx.get(
            f"{control_agent.base_url}/calls/{result.call_sid}", headers=OPERATOR, timeout=5
        ).json()
        return record if (record.get("transfer") or {}).get("outcome") == "answered" else None

    record = wait_for(transferred, what="the dial result to be recorded")
    assert record["ended_by"] == "transfer"
    assert record["transfer"]["target"] == "+15005550200"
    assert [e["event"] for e in record["events"]] == ["keypad", "transfer", "transfer_result"]
    assert metric(control_agent.base_url, "call_transfers_total", outcome="answered") == answered_before + 1


async def test_a_busy_transfer_target_is_recorded_and_counted(
    control_agent: Server, twilio_api: Server
) -> None:
    busy_before = metric(control_agent.base_url, "call_transfers_total", outcome="busy")
    script = CallScript(to_number=CONTROL_LINE, turns=[CallerTurn(dtmf="8", hangup_expected=True)])
    result = await call_line(control_agent, script)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, format_summary(result)
    # The emulator notes the dial at once and the status its action callback got once answered.
    call = wait_for(
        lambda: (c := twilio_call(twilio_api, result.call_sid)) and c["dialed"] and "callback_status" in c["dialed"][0] and c,
        what="the redirect and its action callback",
    )
    assert "<Sip>sip:busy@desk.example.com</Sip>" in call["twiml"][0]
    assert call["dialed"][0] == {**call["dialed"][0], "outcome": "busy", "callback_status": 200}
    wait_for(
        lambda: metric(control_agent.base_url, "call_transfers_total", outcome="busy") == busy_before + 1,
        what="the busy transfer to be counted",
    )


class ToolHandler(BaseHTTPRequestHandler):
    """Tool webhooks with known behaviour: fast, slow, failing, garbage."""

    requests: list[tuple[str, dict, str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ToolHandler.requests.append(
            (self.path, json.loads(body), self.headers.get(SIGNATURE_HEADER, ""))
        )
        ToolHandler.bodies.append(body)
        if self.path == "/slow":
            time.sleep(1.5)  # the tool's own latency, in its own thread
        status, reply = {
            "/broken": (500, b'{"error": "database down"}'),
            "/garbage": (200, b"<html>not json</html>"),
        }.get(self.path, (200, b'{"day": "Tuesday", "hour": "ten"}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        try:
            self.wfile.write(reply)
        except BrokenPipeError:
            pass  # the agent gave up on a tool slower than its timeout, as it should

    def log_message(self, *args) -> None:
        pass


ToolHandler.bodies = []


@pytest.fixture(scope="module")
def tools_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ToolHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


TOOLS_AGENT = """version: 1
name: Tools test agent
numbers: ["+15005550104"]
greeting: Tools line.
fallback: Sorry?
tools:
  - {{name: fast, description: Next visit, url: "{url}/fast", filler_after_secs: 1}}
  - {{name: slow, description: Next visit slowly, url: "{url}/slow", filler: One moment please., filler_after_secs: 0.3}}
  - {{name: broken, description: Fails, url: "{url}/broken", failure: The system is down.}}
  - {{name: garbage, description: Nonsense, url: "{url}/garbage", failure: The system is down.}}
  - {{name: stuck, description: Too slow, url: "{url}/slow", timeout_secs: 0.5, filler: null, failure: The system is down.}}
keypad:
  options: {{"1": visit, "2": slow_visit, "3": broken, "4": garbage, "5": stuck}}
intents:
  - {{name: visit, phrases: [visit], reply: Checking., tool: fast, arguments: {{patient: "42"}}, answer: "Your next visit is {{day}} at {{hour}}."}}
  - {{name: slow_visit, phrases: [slow], reply: Checking., tool: slow, answer: "Your next visit is {{day}} at {{hour}}."}}
  - {{name: broken, phrases: [broken], reply: Checking., tool: broken, answer: "It is {{day}}."}}
  - {{name: garbage, phrases: [garbage], reply: Checking., tool: garbage, answer: "It is {{day}}."}}
  - {{name: stuck, phrases: [stuck], reply: Checking., tool: stuck, answer: "It is {{day}}."}}
"""


async def test_tools_answer_fast_cover_slow_ones_and_failures_are_said_and_counted(
    control_agent: Server, agents_dir: Path, tools_url: str
) -> None:
    (agents_dir / "tools.yaml").write_text(TOOLS_AGENT.format(url=tools_url))

    def loaded() -> bool:
        httpx.get(f"{control_agent.base_url}/health", timeout=5)  # a health check looks for edits
        return "tools.yaml loaded" in control_agent.log()

    wait_for(loaded, what="the tools agent to load")
    script = CallScript(
        to_number="+15005550104",
        turns=[CallerTurn(dtmf=d, reply_timeout_ms=6000) for d in "12345"],
    )
    result = await call_line(control_agent, script)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert all(t.agent_audio_start_s is not None for t in result.turns), summary
    said = await said_on(result)
    # Less each intent's own reply, and the default filler a slow machine may add to any tool.
    answers = [line for line in said if line not in ("Checking.", "One moment while I check that.")]
    assert answers[1:3] == ["Your next visit is Tuesday at ten.", "One moment please."], said
    assert answers[-3:] == ["The system is down."] * 3, said  # the slow answer may be cut by key 3
    record = await record_of(control_agent, result.call_sid)
    calls = [
        (e["tool"], e["ok"], e["error"]) for e in record["events"] if e["event"] == "tool_call"
    ]
    assert calls == [
        ("fast", True, ""),
        ("slow", True, ""),
        ("broken", False, "http_error"),
        ("garbage", False, "bad_response"),
        ("stuck", False, "timeout"),
    ]
    path, first, signed = ToolHandler.requests[0]
    assert (path, first["tool"], first["arguments"]) == ("/fast", "fast", {"patient": "42"})
    assert first["call_id"] == result.call_sid
    stamp = int(signed.split(",")[0].removeprefix("t="))
    assert signed == signature(TOOL_SECRET, stamp, ToolHandler.bodies[0])
    assert metric(control_agent.base_url, "agent_tool_calls_total", result="timeout", tool="stuck") == 1


async def test_a_warm_transfer_calls_the_person_first_then_bridges_the_caller(
    control_agent: Server, twilio_api: Server
) -> None:
    script = CallScript(to_number=CONTROL_LINE, turns=[CallerTurn(dtmf="*", hangup_expected=True)])
    result = await call_line(control_agent, script)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert (await said_on(result))[1:] == ["Let me find the nurse for you, please hold."]
    items = emulator_requests(twilio_api)
    person = next(i for i in items if i["op"] == "create" and i["To"] == "+15005550300")
    assert person["From"] == CONTROL_LINE  # the person sees the practice's number
    assert "<Say>A caller is asking for the nurse.</Say>" in person["Twiml"]
    room = f"warm-{result.call_sid}"
    assert f">{room}</Conference>" in person["Twiml"]
    caller = twilio_call(twilio_api, result.call_sid)
    assert caller is not None and f">{room}</Conference>" in caller["twiml"][-1]
    record = await record_of(control_agent, result.call_sid)
    assert record["transfer"] == {
        "intent": "nurse",
        "target": "+15005550300",
        "mode": "warm",
        "outcome": "answered",
    }
    assert record["ended_by"] == "transfer"


async def test_an_unanswered_warm_transfer_tells_the_caller_and_the_agent_carries_on(
    control_agent: Server, twilio_api: Server
) -> None:
    script = CallScript(
        to_number=CONTROL_LINE,
        turns=[CallerTurn(dtmf="#", reply_timeout_ms=8000), CallerTurn(dtmf="1")],
    )
    result = await call_line(control_agent, script)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert all(t.agent_audio_start_s is not None for t in result.turns), summary
    said = await said_on(result)
    assert said[1] == "Let me find the doctor for you, please hold.", said
    # The apology comes when the dial result does: before or after key 1 on a busy machine.
    assert any(line.startswith("Sorry, nobody is available") for line in said[2:]), said
    assert "You asked about playing cards." in said[2:], said
    record = await record_of(control_agent, result.call_sid)
    assert record["transfer"]["outcome"] == "busy" and record["transfer"]["mode"] == "warm"
    assert twilio_call(twilio_api, result.call_sid) is None, (
        "the caller's call was never redirected"
    )
