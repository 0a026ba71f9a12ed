"""In-process: the simulated caller's scenario format, its turn loop (the LLM emulator playing the
caller as OpenAI and as Anthropic), how it ends, its verdict and report, and its key kept out of
sight."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from switchboard.emulators.llm import ReplyRules, create_app
from switchboard.emulators.profiles import LLMProfile
from switchboard.errors import ConfigError
from switchboard.loadtest.report import CallOutcome, CallResult, GreetingResult, TurnResult
from switchboard.testing.chat import ChatError, ChatLLM
from switchboard.testing.commands import caller_llm_key
from switchboard.testing.report import write_outputs
from switchboard.testing.results import SuiteResult
from switchboard.testing.runner import RunOptions, run_scenario
from switchboard.testing.scenario import Scenario, load_suite, parse_suite
from switchboard.testing.simulated import CallerBrain, spoken_line

REPO = Path(__file__).resolve().parents[1]
BIKE_SUITE = REPO / "examples" / "suites" / "bike_shop.yaml"
CALLER_RULES = REPO / "examples" / "emulator" / "bike_shop_caller.rules.yaml"
GREETING = "Thank you for calling Harbor Bikes. How can I help you today?"
WHICH_DAY = "Sure, we can service your bike. Which day would you like to bring it in?"
BOOKED = "You're booked in for Thursday at nine in the morning. Is there anything else?"


def _errors(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_suite(text, Path("suite.yaml"))
    return str(caught.value)


def _caller_scenario(caller: str, expect: str = "") -> str:
    return f"scenarios:\n  - name: sim\n    caller: {caller}\n" + (f"    expect: {expect}\n" if expect else "")


def test_a_simulated_caller_without_persona_or_goal_is_refused_naming_the_field() -> None:
    message = _errors(_caller_scenario("{goal: book a service}"))
    assert "scenarios[0] (sim).caller.persona: Field required" in message
    assert "scenarios[0] (sim).caller.goal: Field required" in _errors(_caller_scenario("{persona: Sam}"))
    assert "caller.persona: Value error, is blank" in _errors(_caller_scenario("{persona: '  ', goal: book}"))


def test_a_simulated_callers_turns_are_bounded_and_it_replaces_steps() -> None:
    assert "caller.max_turns: Input should be less than or equal to 30" in _errors(
        _caller_scenario("{persona: Sam, goal: book, max_turns: 99}")
    )
    assert "caller.max_turns: Input should be greater than or equal to 1" in _errors(
        _caller_scenario("{persona: Sam, goal: book, max_turns: 0}")
    )
    assert "caller.mood: Extra inputs are not permitted" in _errors(_caller_scenario("{persona: Sam, goal: book, mood: calm}"))
    both = "scenarios:\n  - name: sim\n    caller: {persona: Sam, goal: book}\n    steps: [{say: hi}]\n"
    assert "scenarios[0] (sim): Value error, caller: give either steps or a simulated caller, not both" in _errors(both)
    no_goal = "scenarios:\n  - name: s\n    steps: [{say: hi}]\n    expect: {goal_reached: true}\n"
    assert "expect.goal_reached: only a simulated caller (caller:) has a goal" in _errors(no_goal)
    assert "expect.judged: Value error, a criterion is blank" in _errors(
        _caller_scenario("{persona: Sam, goal: book}", "{judged: ['  ']}")
    )


def test_the_shipped_bike_shop_suite_has_a_simulated_caller_judged_on_the_whole_call() -> None:
    (scenario,) = load_suite(BIKE_SUITE).scenarios
    assert scenario.caller is not None and not scenario.steps
    assert scenario.caller.goal and scenario.caller.max_turns <= 10
    assert scenario.expect.judged and scenario.expect.ended_by == "agent"


def _emulated(rules: ReplyRules) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_app(LLMProfile(ttft_ms=0, tokens_per_sec=10_000), rules))


def _brain(api: str = "openai", caller: str = "{persona: Sam a commuter, goal: book a brake service}", rules=None):
    scenario = Scenario.model_validate({"name": "sim", "caller": _yaml(caller), "expect": {"ended_by": "agent"}})
    transport = _emulated(rules or ReplyRules.load(CALLER_RULES))
    llm = ChatLLM("http://caller/v1" if api == "openai" else "http://caller", "caller-model", api, "sk-caller-key", transport=transport)
    progress: list[str] = []
    return CallerBrain(scenario, llm, progress=progress.append), transport, progress


def _yaml(text: str):
    import yaml

    return yaml.safe_load(text)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_the_caller_answers_what_it_heard_turn_by_turn_and_finishes_on_its_goal(api: str) -> None:
    brain, transport, progress = _brain(api)
    assert await brain.next_line(0, GREETING) == "I would like to book a brake service for Thursday morning."
    assert await brain.next_line(1, WHICH_DAY) == "Thursday morning would be great."
    assert await brain.next_line(2, BOOKED) == "That is all thank you goodbye."
    assert (brain.view.ending, brain.view.reason) == ("goal_reached", "the service is booked for Thursday at nine")
    assert await brain.next_line(3, "Thanks for calling Harbor Bikes. Goodbye!") is None  # done: no more lines
    assert brain.hangup_expected  # expect.ended_by agent: it waits for the agent to hang up
    assert progress[0] == f'sim [turn 1] heard "{GREETING}" → says "I would like to book a brake service for Thursday morning."'
    assert progress[-1] == "sim: the caller reached its goal: the service is booked for Thursday at nine"
    async with httpx.AsyncClient(transport=transport, base_url="http://caller") as client:
        requests = (await client.get("/stats")).json()["items"]
    asked = [r for r in requests if "messages" in r]
    assert len(asked) == 3  # one request per line
    last = asked[-1]
    system = last["system"] if api == "anthropic" else last["messages"][0]["content"]
    assert "Who you are: Sam a commuter" in system and "Your goal for this call: book a brake service" in system
    conversation = last["messages"] if api == "anthropic" else last["messages"][1:]
    # What the caller heard is the user's side, its own lines the assistant's, alternating.
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant", "user"]
    assert conversation[0]["content"] == GREETING and conversation[-1]["content"] == BOOKED


async def test_the_caller_hangs_up_after_max_turns_and_says_its_opening_as_written() -> None:
    echo = ReplyRules([(r".", "Could you say that again?")])
    brain, transport, _ = _brain(caller="{persona: Sam, goal: book, max_turns: 2, opening: Hello there.}", rules=echo)
    assert await brain.next_line(0, GREETING) == "Hello there."
    async with httpx.AsyncClient(transport=transport, base_url="http://caller") as client:
        assert (await client.get("/stats")).json()["connections"] == 0  # the opening asked no LLM
    assert await brain.next_line(1, "Pardon?") == "Could you say that again?"
    assert await brain.next_line(2, "Pardon?") is None
    assert brain.view.ending == "max_turns" and brain.view.lines == ["Hello there.", "Could you say that again?"]
    assert brain.view.ending_words == "the caller ran out of turns (2) before reaching its goal"


async def test_a_caller_that_gives_up_or_has_nothing_to_say_ends_the_call() -> None:
    brain, _, _ = _brain(rules=ReplyRules.load(CALLER_RULES))
    assert await brain.next_line(0, "We only sell umbrellas.") is None  # the catch-all rule: finish_call gave_up
    assert (brain.view.ending, brain.view.reason) == ("gave_up", "the agent did not offer a booking")
    mute, _, _ = _brain(rules=ReplyRules([(r".", "")]))
    assert await mute.next_line(0, GREETING) is None and mute.view.ending == "gave_up"


async def test_a_failing_caller_llm_ends_the_call_with_the_reason_and_never_shows_its_key() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer sk-caller-key"
        return httpx.Response(503, text="overloaded")

    llm = ChatLLM("http://caller/v1", "m", "openai", "sk-caller-key", transport=httpx.MockTransport(refuse))
    assert "sk-caller-key" not in repr(llm)
    with pytest.raises(ChatError) as caught:
        await llm.complete("system", [{"role": "user", "content": "hi"}], [])
    assert "HTTP 503: overloaded" in str(caught.value) and "sk-caller-key" not in str(caught.value)
    scenario = Scenario.model_validate({"name": "sim", "caller": {"persona": "Sam", "goal": "book"}})
    brain = CallerBrain(scenario, llm)
    assert await brain.next_line(0, GREETING) is None
    assert brain.view.ending == "llm_error" and "HTTP 503" in brain.view.reason


def test_the_caller_llm_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    monkeypatch.delenv("SWITCHBOARD_CALLER_LLM_KEY", raising=False)
    assert (caller_llm_key("openai"), caller_llm_key("anthropic")) == ("sk-openai", "sk-ant")
    monkeypatch.setenv("SWITCHBOARD_CALLER_LLM_KEY", "sk-caller")
    assert caller_llm_key("anthropic") == "sk-caller"


def test_spoken_lines_lose_stage_directions_and_quotes() -> None:
    assert spoken_line('"Thursday morning would be great." *smiles* (pause)') == "Thursday morning would be great."
    assert len(spoken_line("word " * 400)) <= 500


async def test_a_simulated_scenario_without_a_caller_llm_fails_saying_what_to_give() -> None:
    scenario = Scenario.model_validate({"name": "sim", "caller": {"persona": "Sam", "goal": "book"}})
    result = await run_scenario(scenario, RunOptions(url="http://127.0.0.1:9"), calls=None)  # type: ignore[arg-type]
    assert not result.passed and "no caller LLM is configured (give --caller-llm-url)" in (result.error or "")


def _turn(index: int, start: float, end: float, reply: float, heard: str) -> TurnResult:
    return TurnResult(
        index=index, clip=f"line{index}.wav", caller_speech_start_s=start, caller_speech_end_s=end,
        agent_audio_start_s=reply, voice_to_voice_ms=round((reply - end) * 1000), transcript=heard,
    )  # fmt: skip


RECORD = {
    "call_id": "call-CA1",
    "ended_by": "agent",
    "transcript": [
        {"role": "agent", "text": GREETING, "t": 0.1},
        {"role": "user", "text": "The brakes need a service.", "t": 5.0},
        {"role": "agent", "text": WHICH_DAY, "t": 5.2},
        {"role": "user", "text": "Thursday morning would be great.", "t": 11.0},
        {"role": "agent", "text": BOOKED, "t": 11.2},
    ],
    "events": [],
}


async def test_the_verdict_judges_the_lines_said_and_the_goal_and_the_report_shows_them(tmp_path: Path) -> None:
    brain, _, _ = _brain()
    for i, heard in enumerate([GREETING, WHICH_DAY, BOOKED]):
        await brain.next_line(i, heard)
    call = CallResult(
        call_sid="CA1", base_url="http://x", outcome=CallOutcome.AGENT_HUNG_UP, started_at=datetime.now(UTC), duration_s=15,
        greeting=GreetingResult(latency_ms=100, start_s=0.1, transcript=GREETING),
        turns=[_turn(0, 3.0, 5.0, 5.6, WHICH_DAY), _turn(1, 9.0, 10.5, 11.3, BOOKED)],  # the goodbye was never said
    )  # fmt: skip
    verdict = await brain.verdict(call, RECORD)
    assert verdict.caller is not None and len(verdict.caller.lines) == 2  # only the lines spoken
    assert [s.label for s in verdict.steps] == [
        'says "I would like to book a brake service for Thursday morning."', 'says "Thursday morning would be great."',
    ]  # fmt: skip
    assert verdict.steps[1].replied == BOOKED and verdict.steps[1].caller_heard == BOOKED
    assert verdict.passed, verdict.failures()
    assert verdict.checks[-1].what == "the caller reached its goal"
    paths = write_outputs(SuiteResult(suite="bikes", url="http://x", wall_s=15, parallel=1, scenarios=[verdict]), tmp_path)
    page = paths["html"].read_text()
    assert "simulated caller: Sam a commuter" in page and "Thursday morning would be great." in page and "the caller heard:" in page
    assert "goal: book a brake service" in paths["junit"].read_text()

    short, _, _ = _brain()
    await short.next_line(0, GREETING)
    failed = await short.verdict(call.model_copy(update={"turns": call.turns[:1]}), RECORD)
    assert not failed.passed
    assert "the caller reached its goal: the agent hung up before the caller said its goal was reached" in failed.failures()


async def test_a_call_that_never_connected_is_judged_with_the_reason_in_words() -> None:
    brain, _, _ = _brain()
    never = CallResult(
        call_sid="CA2", base_url="http://x", outcome=CallOutcome.FAILED, reason="webhook_error: ConnectError",
        started_at=datetime.now(UTC), duration_s=0.1,
    )  # fmt: skip
    verdict = await brain.verdict(never, {})
    assert not verdict.passed and verdict.caller is not None and verdict.caller.ending == "call_ended"
    assert "the call runs to its end: webhook_error: ConnectError" in verdict.failures()
