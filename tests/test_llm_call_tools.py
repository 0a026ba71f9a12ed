"""LLM agents hang up and transfer through tools: real calls, the OpenAI emulator calling them."""

from collections.abc import Iterator

import httpx
import pytest

from conftest import REPO, Clip, Server, replied, start_agent_server
from switchboard.agent.intents import normalize
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary
from test_emulators import start_emulator, stats

CALL_CONTROL_AGENT = REPO / "tests" / "agents" / "numbers" / "call_control.yaml"
RULES = """
- match: "horizon|distant"
  reply: ""
  tool: end_call
  arguments: {goodbye: "It was nice talking to you, goodbye."}
- match: "canoe|birch|plank"
  reply: ""
  tool: transfer_call
  arguments: {destination: front_desk}
"""


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    rules = tmp_path_factory.mktemp("llm") / "rules.yaml"
    rules.write_text(RULES)
    server = start_emulator("llm", "--profile", "instant", "--rules", str(rules))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llm_agent(llm: Server) -> Iterator[Server]:
    """Whisper and Piper locally, the OpenAI emulator as the responder; no Twilio credentials."""
    env = {
        "OPENAI_API_KEY": "sk-test-tools",
        "SWITCHBOARD_RESPONDER": "openai",
        "SWITCHBOARD_LLM_BASE_URL": llm.base_url + "/v1",
    }
    server = start_agent_server(env=env, agent=CALL_CONTROL_AGENT)
    yield server
    server.stop()


def record_of(server: Server, call_sid: str) -> dict:
    return httpx.get(f"{server.base_url}/calls/{call_sid}", timeout=5).json()


async def test_the_llm_ends_the_call_with_its_end_call_tool(
    llm_agent: Server, llm: Server, speech_clips: dict[str, Clip]
) -> None:
    script = CallScript(
        turns=[CallerTurn(audio=speech_clips["fw_stereo_right_16k.wav"].path, hangup_expected=True)]
    )
    result = await run_call(llm_agent.base_url, script, transcribe=True)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert replied(result.turns[0].transcript, "It was nice talking to you, goodbye."), summary
    record = record_of(llm_agent, result.call_sid)
    assert record["ended_by"] == "agent"
    assert [e["event"] for e in record["events"]] == ["end_call"]
    offered = [i for i in stats(llm)["items"] if "messages" in i]
    assert offered, "the LLM was never asked"
    assert any(i.get("tool_call") == "end_call" for i in stats(llm)["items"])


async def test_a_transfer_the_ingress_cannot_make_is_apologised_for_and_the_call_goes_on(
    llm_agent: Server, speech_clips: dict[str, Clip]
) -> None:
    script = CallScript(turns=[CallerTurn(audio=speech_clips["osr_us_0010_s01_8k.wav"].path)])
    result = await run_call(llm_agent.base_url, script, transcribe=True)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    # The destination's line, then (no Twilio credentials here) the agent's apology.
    heard = normalize(result.turns[0].transcript or "")
    assert "put you through right now" in heard, summary
    record = record_of(llm_agent, result.call_sid)
    assert record["transfer"] == {
        "intent": "front_desk",
        "target": "+15005550200",
        "outcome": "unsupported",
    }
    assert [e["event"] for e in record["events"]] == ["tool", "transfer"]
    assert record["ended_by"] == "caller"
