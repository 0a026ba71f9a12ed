"""LLM agents hang up, transfer, send digits and call webhook tools: real calls, the LLM emulator
calling them as OpenAI (``tool_calls``) and, for hang-up and a webhook, as Anthropic (``tool_use``)."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import soundfile as sf
import yaml

from conftest import (
    API_KEY,
    REPO,
    Clip,
    Server,
    agent_lines,
    metric,
    start_agent_server,
    stored_call,
)
from switchboard.agent.config import AgentConfig
from switchboard.call_ids import call_id_for_twilio
from switchboard.dtmf_tones import detect_tones
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary
from test_emulators import start_emulator, stats

TRANSFER_FAILED = AgentConfig.model_fields["transfer_failed"].default
CALL_CONTROL_AGENT = REPO / "tests" / "agents" / "numbers" / "call_control.yaml"
RULES = """
- match: "horizon|distant"
  reply: ""
  tool: end_call
  arguments: {goodbye: "It was nice talking to you, goodbye."}
- match: "rice|served|bowls"
  reply: ""
  tool: next_visit
  arguments: {patient: "7"}
  after_tool: "The clinic says {result}"
- match: "canoe|birch|plank"
  reply: ""
  tool: transfer_call
  arguments: {destination: front_desk}
- match: "glue|sheet|background"
  reply: "Pressing the keys now."
  tool: send_digits
  arguments: {digits: "5w0#"}
- match: "chicken|rare|dish"
  reply: ""
  tool: send_digits
  arguments: {digits: "9x"}
  after_tool: "I could not press those keys."
"""


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    rules = tmp_path_factory.mktemp("llm") / "rules.yaml"
    rules.write_text(RULES)
    server = start_emulator("llm", "--profile", "instant", "--rules", str(rules))
    yield server
    server.stop()


class NextVisit(BaseHTTPRequestHandler):
    """A tool webhook: the patient's next visit."""

    seen: list[dict] = []

    def do_POST(self) -> None:
        NextVisit.seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        reply = b'{"day": "Friday", "hour": "nine"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def agent_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The call-control test agent plus one webhook tool on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), NextVisit)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = yaml.safe_load(CALL_CONTROL_AGENT.read_text())
    config["tools"] = [
        {
            "name": "next_visit",
            "description": "The patient's next visit",
            "url": f"http://127.0.0.1:{server.server_address[1]}/next-visit",
            "parameters": {"type": "object", "properties": {"patient": {"type": "string"}}},
        }
    ]
    path = tmp_path_factory.mktemp("agent") / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    yield path
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def llm_agent(llm: Server, agent_file: Path) -> Iterator[Server]:
    """Whisper and Piper locally, the OpenAI emulator as the responder; no Twilio credentials."""
    env = {
        "OPENAI_API_KEY": "sk-test-tools",
        "SWITCHBOARD_RESPONDER": "openai",
        "SWITCHBOARD_LLM_BASE_URL": llm.base_url + "/v1",
    }
    server = start_agent_server(env=env, agent=agent_file)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def anthropic_agent(llm: Server, agent_file: Path) -> Iterator[Server]:
    """The same agent with the Anthropic emulator (Pipecat's AnthropicLLMService) answering."""
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-test-tools",
        "SWITCHBOARD_RESPONDER": "anthropic",
        "SWITCHBOARD_LLM_BASE_URL": llm.base_url,
    }
    server = start_agent_server(env=env, agent=agent_file)
    yield server
    server.stop()


PROVIDERS = pytest.mark.parametrize("provider", ["openai", "anthropic"])


def agent_of(request: pytest.FixtureRequest, provider: str) -> Server:
    return request.getfixturevalue("llm_agent" if provider == "openai" else "anthropic_agent")


def tool_calls(llm: Server, api: str) -> list[dict]:
    return [i for i in stats(llm)["items"] if i["api"] == api and "tool_call" in i]


def record_of(server: Server, call_sid: str) -> dict:
    return httpx.get(
        f"{server.base_url}/calls/{call_sid}", headers={"X-API-Key": API_KEY}, timeout=5
    ).json()


@PROVIDERS
async def test_the_llm_ends_the_call_with_its_end_call_tool(
    provider: str, request: pytest.FixtureRequest, llm: Server, speech_clips: dict[str, Clip]
) -> None:
    llm_agent = agent_of(request, provider)
    script = CallScript(
        turns=[CallerTurn(audio=speech_clips["fw_stereo_right_16k.wav"].path, hangup_expected=True)]
    )
    result = await run_call(llm_agent.base_url, script, transcribe=False)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert result.turns[0].agent_audio_start_s is not None, summary
    said = agent_lines(await stored_call(result.call_sid))
    assert said[-1] == "It was nice talking to you, goodbye.", said
    record = record_of(llm_agent, result.call_sid)
    assert record["ended_by"] == "agent"
    assert [e["event"] for e in record["events"]] == ["end_call"]
    asked = [i for i in stats(llm)["items"] if i["api"] == provider and "messages" in i]
    assert asked, "the LLM was never asked"
    assert tool_calls(llm, provider)[-1]["tool_call"] == "end_call"


async def test_a_transfer_the_ingress_cannot_make_is_apologised_for_and_the_call_goes_on(
    llm_agent: Server, speech_clips: dict[str, Clip]
) -> None:
    script = CallScript(turns=[CallerTurn(audio=speech_clips["osr_us_0010_s01_8k.wav"].path)])
    result = await run_call(llm_agent.base_url, script, transcribe=False)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.turns[0].agent_audio_start_s is not None, summary
    # The destination's line, then (no Twilio credentials here) the agent's apology.
    said = agent_lines(await stored_call(result.call_sid))  # a silence re-prompt may follow
    assert TRANSFER_FAILED in said and said.index(TRANSFER_FAILED) >= 2, said
    record = record_of(llm_agent, result.call_sid)
    assert record["transfer"] == {
        "intent": "front_desk",
        "target": "+15005550200",
        "mode": "cold",
        "outcome": "unsupported",
    }
    assert [e["event"] for e in record["events"]] == ["tool", "transfer"]
    assert record["ended_by"] == "caller"


@PROVIDERS
async def test_the_llm_calls_a_webhook_tool_and_speaks_its_answer(
    provider: str, request: pytest.FixtureRequest, llm: Server, speech_clips: dict[str, Clip]
) -> None:
    llm_agent = agent_of(request, provider)
    script = CallScript(turns=[CallerTurn(audio=speech_clips["osr_us_0010_s05_8k.wav"].path)])
    result = await run_call(llm_agent.base_url, script, transcribe=False)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.turns[0].agent_audio_start_s is not None, summary
    said = agent_lines(await stored_call(result.call_sid))
    assert "Friday" in said[1], said
    assert NextVisit.seen[-1]["tool"] == "next_visit"
    assert NextVisit.seen[-1]["arguments"] == {"patient": "7"}
    assert NextVisit.seen[-1]["call_id"] == call_id_for_twilio(result.call_sid)
    # The model got the tool's answer back (an OpenAI tool message, an Anthropic tool_result).
    last = [i for i in stats(llm)["items"] if i["api"] == provider and "messages" in i][-1]
    assert "Friday" in json.dumps(last["messages"][-1])


async def test_the_llm_presses_keys_with_its_send_digits_tool_after_its_words(
    llm_agent: Server, llm: Server, speech_clips: dict[str, Clip], tmp_path: Path
) -> None:
    before = metric(llm_agent.base_url, "dtmf_sent_total", source="llm")
    script = CallScript(turns=[CallerTurn(audio=speech_clips["osr_us_0010_s02_8k.wav"].path)])
    recording = tmp_path / "call.wav"
    result = await run_call(llm_agent.base_url, script, transcribe=False, record_path=recording)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.digits_heard == "50#", summary
    # The words the model streamed before its tool call are heard first, then the tones.
    agent_track = sf.read(recording, dtype="int16")[0][:, 1]
    first_tone = detect_tones(agent_track)[0]
    assert first_tone.start_s - result.turns[0].agent_audio_start_s >= 0.8, summary
    assert tool_calls(llm, "openai")[-1] == {
        "api": "openai",
        "tool_call": "send_digits",
        "arguments": {"digits": "5w0#"},
    }
    record = record_of(llm_agent, result.call_sid)
    sent = [e for e in record["events"] if e["event"] == "send_digits"]
    assert sent == [{**sent[0], "digits": "5w0#", "source": "llm"}]
    assert metric(llm_agent.base_url, "dtmf_sent_total", source="llm") == before + 1


async def test_a_bad_dial_string_from_the_llm_is_refused_and_the_call_goes_on(
    llm_agent: Server, llm: Server, speech_clips: dict[str, Clip]
) -> None:
    labels = {"result": "invalid_digits", "tool": "send_digits"}
    before = metric(llm_agent.base_url, "llm_tool_calls_total", **labels)
    script = CallScript(turns=[CallerTurn(audio=speech_clips["osr_us_0010_s04_8k.wav"].path)])
    result = await run_call(llm_agent.base_url, script, transcribe=False)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.turns[0].agent_audio_start_s is not None, summary
    said = agent_lines(await stored_call(result.call_sid))
    assert said[1] == "I could not press those keys.", said
    assert result.digits_heard == "", summary
    last = [i for i in stats(llm)["items"] if i["api"] == "openai" and "messages" in i][-1]
    assert "not a dial string" in json.dumps(last["messages"][-1])
    record = record_of(llm_agent, result.call_sid)
    assert not [e for e in record["events"] if e["event"] == "send_digits"]
    assert metric(llm_agent.base_url, "llm_tool_calls_total", **labels) == before + 1
