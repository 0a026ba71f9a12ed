"""Call control in the pool: orchestrator + Redis + worker, with the Twilio REST emulator.

The same features as tests/test_call_control.py and tests/test_outbound.py, through the
production path: the orchestrator answers the webhook and places the stream on a worker.
"""

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from conftest import (
    REPO,
    RedisServer,
    Server,
    ServerGroup,
    agent_lines,
    free_port,
    start_orchestrator,
    start_redis,
    start_worker,
    stored_call,
    wait_for,
)
from conftest import _start as start_server
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary

ACCOUNT_SID = "AC" + "4" * 32
AUTH_TOKEN = "pool-control-test-token"
API_KEY = "pool-control-api-key"
CONTROL_LINE = "+15005550101"
BUSY_DESK = "sip:busy@desk.example.com"  # key 8 of the call control agent transfers there


def get_json(url: str) -> dict:
    return httpx.get(url, headers={"X-API-Key": API_KEY}, timeout=5).json()


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url, json=body, headers={"X-API-Key": API_KEY}, timeout=10)


@dataclass
class Stack:
    redis: RedisServer
    twilio: Server
    orchestrator: Server
    worker: Server

    def call(self, script: CallScript):
        """A call as Twilio would run it, transfers followed through the REST emulator."""
        return run_call(
            self.orchestrator.base_url, script, transcribe=False, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
            twilio_api=self.twilio.base_url,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    argv = [sys.executable, "-m", "switchboard.emulators", "twilio", "--port", str(port),
            "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN,
            "--dial-outcome", f"{BUSY_DESK}=busy"]  # fmt: skip
    with ServerGroup() as group:
        twilio = group.add(start_server(argv, "emulator-twilio", "/health", port, None))
        redis = group.add(start_redis(tmp_path_factory.mktemp("redis")))
        env = {
            "SWITCHBOARD_AGENTS_DIR": str(REPO / "tests" / "agents" / "numbers"),
            "SWITCHBOARD_API_KEY": API_KEY,
            "SWITCHBOARD_OUTBOUND_FROM": CONTROL_LINE,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "SWITCHBOARD_TWILIO_API_URL": twilio.base_url,
        }
        orchestrator = group.add(start_orchestrator(redis.url, env))
        # Workers are internal: Twilio's callbacks reach the orchestrator, which forwards them.
        worker = group.add(start_worker(
            redis.url, "cc-w1", max_calls=2, env={**env, "SWITCHBOARD_PUBLIC_URL": orchestrator.base_url}
        ))  # fmt: skip
        stack = Stack(redis, twilio, orchestrator, worker)
        wait_for(
            lambda: httpx.get(f"{orchestrator.base_url}/health", timeout=5).status_code == 200,
            limit_secs=30,
            what="the pool to be ready",
        )
        yield stack


async def test_the_dialed_number_picks_the_agent_in_the_pool(stack: Stack) -> None:
    result = await stack.call(CallScript(to_number=CONTROL_LINE, turns=[]))
    assert result.greeting is not None, format_summary(result)
    assert agent_lines(await stored_call(result.call_sid)) == ["Hello, this is the call control line."]


async def test_a_transfer_in_the_pool_reports_back_to_the_worker(stack: Stack) -> None:
    script = CallScript(to_number=CONTROL_LINE, turns=[CallerTurn(dtmf="0", hangup_expected=True)])
    result = await stack.call(script)
    assert result.outcome == CallOutcome.TRANSFERRED, format_summary(result)
    assert [(t.target, t.dial_status) for t in result.transfers] == [("+15005550200", "completed")]

    def reported() -> dict | None:
        call = httpx.get(f"{stack.twilio.base_url}/emulator/calls/{result.call_sid}", timeout=5)
        dialed = call.json()["dialed"] if call.status_code == 200 else []
        return dialed[0] if dialed and "callback_status" in dialed[0] else None

    dial = wait_for(reported, what="the dial result to be posted")
    # Twilio reports to the public tier, which forwards the report to the worker holding the call.
    assert dial["action"].startswith(stack.orchestrator.base_url + "/twilio/transfer-status")
    assert dial["callback_status"] == 200
    record = get_json(f"{stack.worker.base_url}/calls/{result.call_sid}")
    assert record["transfer"]["outcome"] == "answered"


async def test_a_cold_transfer_nobody_takes_brings_the_caller_back_to_the_agent(stack: Stack) -> None:
    script = CallScript(to_number=CONTROL_LINE, turns=[CallerTurn(dtmf="8"), CallerTurn(dtmf="1")])
    result = await stack.call(script)
    summary = format_summary(result) + f"\ntransfers {result.transfers}, resumes {result.resumes}"
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert [(t.target, t.dial_status, t.back_to_agent) for t in result.transfers] == [(BUSY_DESK, "busy", True)]
    assert len(result.resumes) == 1 and result.resumes[0].heard_at_s is not None, summary
    assert result.turns[1].voice_to_voice_ms is not None, summary  # the agent answered key 1
    record = get_json(f"{stack.worker.base_url}/calls/{result.call_sid}")
    kinds = [e["event"] for e in record["events"]]
    assert "resumed" in kinds, record["events"]
    assert record["ended_by"] == "caller", record


async def test_outbound_calls_through_the_orchestrator(stack: Stack) -> None:
    placed = post(
        f"{stack.orchestrator.base_url}/calls",
        {
            "to": "+15005550555",
            "agent": "Short call test agent",
            "voicemail": "Please call us back.",
        },
    )
    assert placed.status_code == 201, placed.text
    items = get_json(f"{stack.twilio.base_url}/stats")["items"]
    url = [i for i in items if i["op"] == "create"][-1]["Url"]
    assert url.startswith(stack.orchestrator.base_url + "/twilio/voice?")
    common = {
        "webhook_url": url,
        "from_number": CONTROL_LINE,
        "to_number": "+15005550555",
        "turns": [],
    }
    person = await stack.call(CallScript(answered_by="human", **common))
    assert person.greeting is not None, format_summary(person)
    assert agent_lines(await stored_call(person.call_sid)) == ["Hello, this line is short."]
    machine = await stack.call(CallScript(answered_by="machine_end_beep", **common))
    assert (machine.outcome, machine.reason) == (
        CallOutcome.REJECTED,
        "twiml: Please call us back.",
    )
