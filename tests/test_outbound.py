"""Outbound calls: POST /calls and ``switchboard dial`` through the Twilio REST emulator, answered
by a person (the caller simulator plays the callee) or by a machine."""

import csv
import datetime
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import (
    API_KEY,
    OUTBOUND_FROM,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    Server,
    SignedAgent,
    agent_lines,
    free_port,
    stored_call,
)
from switchboard.dialer import dial_batch, read_rows
from switchboard.loadtest.caller import CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary

ACCOUNT_SID, AUTH_TOKEN = TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
OUR_NUMBER = OUTBOUND_FROM  # the call control test agent's number
CALLEE = "+15005550444"


@pytest.fixture(scope="module")
def twilio_api(signed_agent: SignedAgent) -> Server:
    return signed_agent.twilio


@pytest.fixture(scope="module")
def agent(signed_agent: SignedAgent) -> Server:
    """Outbound calls from the session's signed agent (conftest), placed through the emulator."""
    return signed_agent.server


def place(agent: Server, body: dict, key: str = API_KEY) -> httpx.Response:
    return httpx.post(f"{agent.base_url}/calls", json=body, headers={"X-API-Key": key}, timeout=10)


def get_items(twilio_api: Server) -> list[dict]:
    return httpx.get(f"{twilio_api.base_url}/stats", timeout=5).json()["items"]


def created(twilio_api: Server) -> dict:
    """The newest call-create request the emulator received."""
    items = httpx.get(f"{twilio_api.base_url}/stats", timeout=5).json()["items"]
    return [i for i in items if i["op"] == "create"][-1]


async def test_an_outbound_call_answered_by_a_person_gets_the_named_agent(
    agent: Server, twilio_api: Server
) -> None:
    response = place(agent, {"to": CALLEE, "agent": "Short call test agent"})
    assert response.status_code == 201, response.text
    request = created(twilio_api)
    assert request["To"] == CALLEE and request["From"] == OUR_NUMBER
    assert request["MachineDetection"] == "DetectMessageEnd"
    assert response.json()["call_sid"].startswith("CA")
    # Twilio posts the call's Url once the callee picks up; the simulator plays the callee.
    script = CallScript(
        webhook_url=request["Url"],
        answered_by="human",
        from_number=OUR_NUMBER,
        to_number=CALLEE,
        turns=[],
    )
    result = await run_call(
        agent.base_url, script, transcribe=False, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID
    )
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.greeting is not None, summary
    assert agent_lines(await stored_call(result.call_sid)) == ["Hello, this line is short."]


async def test_without_a_named_agent_the_caller_id_picks_it(
    agent: Server, twilio_api: Server
) -> None:
    assert place(agent, {"to": CALLEE}).status_code == 201
    script = CallScript(
        webhook_url=created(twilio_api)["Url"], answered_by="human", from_number=OUR_NUMBER,
        to_number=CALLEE, turns=[],
    )  # fmt: skip
    result = await run_call(
        agent.base_url, script, transcribe=False, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID
    )
    assert result.greeting is not None, format_summary(result)
    assert agent_lines(await stored_call(result.call_sid)) == ["Hello, this is the call control line."]


async def test_a_machine_gets_the_voicemail_and_no_agent(agent: Server, twilio_api: Server) -> None:
    voicemail = "Hello, this is Bright Smile Dental. Please call us back."
    assert place(agent, {"to": CALLEE, "voicemail": voicemail}).status_code == 201
    script = CallScript(
        webhook_url=created(twilio_api)["Url"], answered_by="machine_end_beep", from_number=OUR_NUMBER,
        to_number=CALLEE, turns=[],
    )  # fmt: skip
    result = await run_call(
        agent.base_url, script, transcribe=False, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID
    )
    assert result.outcome == CallOutcome.REJECTED
    assert result.reason == f"twiml: {voicemail}"


def test_bad_requests_get_a_clear_answer(agent: Server) -> None:
    assert place(agent, {"to": CALLEE}, key="wrong").status_code == 401
    bad = place(agent, {"to": "555-1234"})
    assert bad.status_code == 422 and "to" in bad.text
    assert place(agent, {"to": CALLEE, "colour": "blue"}).status_code == 422


def test_switchboard_dial_places_the_call(agent: Server, twilio_api: Server) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "switchboard.cli", "dial", CALLEE, "--agent", "Call control test agent",
         "--url", agent.base_url, "--api-key", API_KEY],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "placed CA" in done.stdout and "Call control test agent" in done.stdout
    assert "agent=Call+control+test+agent" in created(twilio_api)["Url"]


async def test_a_csv_batch_places_good_rows_and_reports_bad_ones(
    agent: Server, twilio_api: Server
) -> None:
    rows = [
        {"to": "+15005550601", "agent": "Short call test agent"},
        {"to": "555"},
        {"to": "+15005550602", "voicemail": "Call us back."},
    ]
    results = await dial_batch(agent.base_url, API_KEY, rows, concurrency=2)
    assert [(r.row, r.status, r.attempts) for r in results] == [
        (1, "placed", 1),
        (2, "failed", 1),  # a 422 is the row's fault: not retried
        (3, "placed", 1),
    ]
    assert "422" in results[1].error and results[0].call_sid.startswith("CA")
    created_to = {i["To"] for i in get_items(twilio_api) if i["op"] == "create"}
    assert {"+15005550601", "+15005550602"} <= created_to


async def test_a_batch_keeps_calling_hours_and_retries_an_unreachable_server() -> None:
    rows = [{"to": "+15005550603"}]
    noon = datetime.time(12, 0)
    early = await dial_batch(
        "http://127.0.0.1:9",
        API_KEY,
        rows,
        hours=(datetime.time(8), datetime.time(9)),
        now=lambda: noon,
    )
    assert (early[0].status, early[0].attempts) == ("outside_hours", 0)
    down = await dial_batch(
        f"http://127.0.0.1:{free_port()}", API_KEY, rows, retries=2, retry_pause_secs=0.01
    )
    assert (down[0].status, down[0].attempts) == ("failed", 3)
    assert down[0].error.startswith("unreachable")


def test_switchboard_dial_csv_writes_a_result_file(agent: Server, tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("to,agent\n+15005550604,Short call test agent\n+15005550605,\n")
    out = tmp_path / "results.csv"
    done = subprocess.run(
        [sys.executable, "-m", "switchboard.cli", "dial", "--csv", str(numbers), "--results", str(out),
         "--url", agent.base_url, "--api-key", API_KEY],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(out, newline="") as f:
        written = list(csv.DictReader(f))
    assert [(r["to"], r["status"]) for r in written] == [
        ("+15005550604", "placed"),
        ("+15005550605", "placed"),
    ]
    assert "2/2 placed" in done.stdout


def test_a_csv_row_may_name_its_ingress(tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("to,ingress,colour\n+15005550606,livekit,blue\n+15005550607,\n")
    assert read_rows(numbers) == [
        {"to": "+15005550606", "ingress": "livekit"},
        {"to": "+15005550607", "ingress": ""},
    ]
