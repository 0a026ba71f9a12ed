"""In-process: the suite format's validation, what the shipped receptionist suite covers, judging a
call from its record, the replay diff's classification, refusals, and the JUnit output."""

from __future__ import annotations

import asyncio
import io
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
import soundfile as sf
import uvicorn
import yaml
from pydantic import SecretStr

from conftest import free_port, start_redis
from switchboard.agent.config import load_agent_config
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.models import CallStatus
from switchboard.errors import ConfigError
from switchboard.loadtest.report import CallOutcome, CallResult, GreetingResult, TurnResult
from switchboard.settings import Settings
from switchboard.testing.calls_client import CallsAPIError, CallsClient
from switchboard.testing.diff import compare_calls
from switchboard.testing.judge import judge_call
from switchboard.testing.replay import (
    CallerAction,
    Refused,
    ReplayOptions,
    ReplayPlan,
    plan_replay,
    replay_one,
)
from switchboard.testing.report import write_junit
from switchboard.testing.results import Check, ScenarioResult, SuiteResult
from switchboard.testing.scenario import Scenario, load_suite, parse_suite

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "examples" / "suites" / "receptionist.yaml"


def _errors(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_suite(text, Path("suite.yaml"))
    return str(caught.value)


def test_a_step_doing_two_things_is_refused_naming_the_scenario_and_step() -> None:
    message = _errors("scenarios:\n  - name: hours\n    steps:\n      - {say: hi, press: '1'}\n")
    assert message.startswith("suite.yaml: scenarios[0] (hours).steps[0]: ")
    assert "give exactly one of say, audio, press, silence_secs (got say, press)" in message


def test_a_misspelt_expectation_is_refused_naming_the_field() -> None:
    message = _errors("scenarios:\n  - name: hours\n    steps:\n      - say: hi\n        expect: {intnet: hours}\n")
    assert "scenarios[0] (hours).steps[0].expect.intnet: Extra inputs are not permitted" in message


def test_a_bad_pattern_a_bad_key_and_a_duplicate_name_are_refused() -> None:
    assert "expect.matches: Value error, not a regular expression" in _errors(
        "scenarios:\n  - name: a\n    steps:\n      - {say: hi, expect: {matches: '('}}\n"
    )
    assert "steps[0].press: String should match pattern" in _errors("scenarios:\n  - name: a\n    steps:\n      - {press: 'x'}\n")
    assert "scenarios[1].name: 'a' is used twice" in _errors("scenarios:\n  - {name: a}\n  - {name: a}\n")
    assert "not valid YAML" in _errors("scenarios: [")


def test_the_shipped_suite_covers_every_intent_key_silence_digits_and_the_goodbye() -> None:
    suite = load_suite(SUITE)
    agent = load_agent_config(REPO / "src" / "switchboard" / "agents" / "receptionist.yaml")
    steps = [step for s in suite.scenarios for step in s.steps]
    assert len(suite.scenarios) >= 20
    assert {i.name for i in agent.intents} | {"fallback"} <= {st.expect.intent for st in steps}
    pressed = {st.press for st in steps if st.press}
    assert set(agent.keypad.options) <= pressed and pressed - set(agent.keypad.options) - {"123456#", "42#"}
    assert any(st.silence_secs for st in steps) and any(st.expect.digits for st in steps)
    assert {"agent", "idle", "transfer", "caller"} <= {s.expect.ended_by for s in suite.scenarios}


def _call(turns: list[TurnResult], clears: list[float] | None = None) -> CallResult:
    return CallResult(
        call_sid="CA1", stream_sid="MZ1", base_url="http://x", outcome=CallOutcome.COMPLETED,
        started_at=datetime.now(UTC), duration_s=9.0, greeting=GreetingResult(latency_ms=30, start_s=0.5),
        turns=turns, clear_times_s=clears or [],
    )  # fmt: skip


def _turn(index: int, start: float, end: float, reply: float, v2v: float = 600) -> TurnResult:
    return TurnResult(
        index=index, clip="c", caller_speech_start_s=start, caller_speech_end_s=end,
        agent_audio_start_s=reply, voice_to_voice_ms=v2v,
    )  # fmt: skip


# The record's clock starts 0.4 s before the caller's: its greeting line is at 0.1, heard at 0.5.
RECORD = {
    "call_id": "call-CA1",
    "ended_by": "caller",
    "transcript": [
        {"role": "agent", "text": "Hello.", "t": 0.1},
        {"role": "user", "text": "What are your hours?", "t": 3.0},
        {"role": "agent", "text": "We open at eight.", "t": 3.1},
    ],
    "events": [{"event": "intent", "intent": "hours", "at_s": 3.1}],
}


async def test_judging_reads_the_record_and_says_what_went_wrong_in_words() -> None:
    scenario = Scenario.model_validate({
        "name": "hours", "steps": [{"say": "hours?", "expect": {"intent": "billing", "says": ["eight"], "max_latency_ms": 500}}],
        "expect": {"ended_by": "agent"},
    })  # fmt: skip
    verdict = await judge_call(scenario, _call([_turn(0, 2.0, 3.0, 3.6, v2v=600)]), RECORD)
    assert not verdict.passed
    assert verdict.steps[0].replied == "We open at eight." and verdict.greeting == "Hello."
    assert verdict.failures() == [
        "ended by agent: the call was ended by caller",
        "step 1 (says \"hours?\"): intent: expected the agent to answer with billing; it answered with hours",
        "step 1 (says \"hours?\"): voice-to-voice within 500 ms: 600 ms, 100 ms over budget",
    ]


async def test_a_stop_while_the_caller_is_silent_is_a_false_barge_in() -> None:
    scenario = Scenario.model_validate({"name": "x", "steps": [{"say": "hi"}]})
    talked_over = await judge_call(scenario, _call([_turn(0, 2.0, 3.0, 3.6)], clears=[2.1]), RECORD)
    assert talked_over.passed, talked_over.failures()
    # An interruption in the record at 5.1 (5.5 on the caller's clock) with nobody talking:
    noisy = {**RECORD, "events": [*RECORD["events"], {"event": "interrupted", "at_s": 5.1}]}
    verdict = await judge_call(scenario, _call([_turn(0, 2.0, 3.0, 3.6)]), noisy)
    assert verdict.failures() == ["no false barge-in: the agent stopped talking while the caller was silent at 5.5 s"]


def _plan(*actions: CallerAction) -> ReplayPlan:
    from switchboard.loadtest.caller import CallScript

    return ReplayPlan(CallScript(), list(actions), action_turns=list(range(len(actions))))


def _record(reply: str, intent: str, ended_by: str = "caller") -> dict:
    return {
        "call_id": "call-new", "ended_by": ended_by,
        "transcript": [{"role": "agent", "text": "Hello.", "t": 0.1}, {"role": "agent", "text": reply, "t": 2.4}],
        "events": [{"event": "keypad", "digit": "1", "intent": intent, "at_s": 2.3}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "intent", "ended_by", "verdict", "note"),
    [
        ("We open at eight.", "hours", "caller", "same", None),
        ("We're open from 8.", "hours", "caller", "worded differently", 'said "We\'re open from 8." instead of "We open at eight."'),
        ("Sorry, that key isn't an option.", None, "caller", "different action", "key 1 → not an option (originally: key 1 → hours)"),
        ("We open at eight.", "hours", "agent", "different action", "the call was ended by agent instead of caller"),
    ],
)
def test_the_replay_diff_classifies_each_difference(reply, intent, ended_by, verdict, note) -> None:
    original = _record("We open at eight.", "hours")
    sim = _call([_turn(0, 2.6, 2.6, 2.7)])
    sim.greeting = GreetingResult(latency_ms=30, start_s=0.4)
    result = compare_calls("call-old", original, _plan(CallerAction(2.2, 2.2, keys="1")), sim, _record(reply, intent, ended_by), None, 250)
    assert result.verdict == verdict
    assert result.passed == (verdict != "different action")
    if note:
        assert any(note in n for n in result.notes), result.notes


def _flac(channels: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((16000, channels), dtype=np.int16), 16000, format="FLAC")
    return buffer.getvalue()


def test_recordings_without_a_caller_channel_or_timings_are_refused_clearly() -> None:
    with pytest.raises(Refused, match="the recording has one channel; replay needs the caller's own channel"):
        plan_replay("call-1", RECORD, _flac(1))
    with pytest.raises(Refused, match="the record has no timings"):
        plan_replay("call-1", {"call_id": "call-1"}, _flac(2))
    greeted_only = {**RECORD, "events": [], "transcript": RECORD["transcript"][:1]}
    with pytest.raises(Refused, match="the caller neither spoke nor pressed a key, and the agent only greeted"):
        plan_replay("call-1", greeted_only, _flac(2))


def test_a_silent_callers_call_replays_as_silence_until_the_agent_hangs_up() -> None:
    lines = [{"role": "agent", "text": t, "t": at} for t, at in (("Hello.", 0.1), ("Still there?", 9.0), ("Bye.", 18.0))]
    plan = plan_replay("call-1", {"transcript": lines, "events": [], "ended_by": "idle"}, _flac(2))
    assert plan.actions == [] and [t.label for t in plan.script.turns] == ["silence", "silence"]
    assert plan.script.turns[-1].hangup_expected


class _History:
    """The calls API of a server that kept a call's record but not its audio."""

    base_url = "http://history"

    async def record(self, call_id: str) -> dict | None:
        return {**RECORD, "recording": None} if call_id == "call-1" else None

    async def recording(self, call_id: str) -> bytes | None:
        return None


async def test_an_unrecorded_or_unknown_call_is_refused_with_the_reason() -> None:
    history = _History()
    unrecorded = await replay_one("call-1", ReplayOptions(), history, history)  # type: ignore[arg-type]
    assert unrecorded.verdict == "error" and not unrecorded.passed
    assert unrecorded.error == "call-1: the call was not recorded (recording is opt-in per agent: `recording: enabled: true`)"
    unknown = await replay_one("call-2", ReplayOptions(), history, history)  # type: ignore[arg-type]
    assert unknown.error == "call-2: no such call at http://history"


def test_junit_has_a_case_per_scenario_and_the_failed_checks_as_its_failure(tmp_path: Path) -> None:
    failed = ScenarioResult(name="hours", passed=False, duration_s=3.0, checks=[Check(what="ended by agent", passed=False, detail="ended by caller")])
    run = SuiteResult(suite="s", url="u", wall_s=4.0, parallel=2, scenarios=[failed, ScenarioResult(name="ok", passed=True, duration_s=1.0)])
    root = ET.parse(write_junit(run, tmp_path / "junit.xml")).getroot()
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    failure = root.find("testcase[@name='hours']/failure")
    assert failure is not None and failure.get("message") == "ended by agent: ended by caller"
    assert root.find("testcase[@name='ok']/failure") is None


def test_a_folder_of_suite_files_is_one_suite(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"scenarios": [{"name": name, "steps": [{"press": "1"}]}]}))
    suite = load_suite(tmp_path)
    assert [s.name for s in suite.scenarios] == ["a", "b"]
    assert suite.dialing("+15550001").scenarios[0].to == "+15550001"


async def test_a_judged_criterion_is_decided_by_the_llm_and_its_reason_kept() -> None:
    import httpx

    from switchboard.emulators.llm import ReplyRules, create_app
    from switchboard.emulators.profiles import LLMProfile
    from switchboard.testing.judge import LLMJudge

    # The emulator answers PASS only when the agent's reply names a day (its rule), FAIL otherwise.
    rules = ReplyRules([(r"reply: .*(Monday|Tuesday)", "PASS: it offers a day"), (r".", "FAIL: no day offered")])
    transport = httpx.ASGITransport(app=create_app(LLMProfile(ttft_ms=0, tokens_per_sec=10_000), rules))
    judge = LLMJudge("http://judge/v1", api_key="test", transport=transport)
    scenario = Scenario.model_validate({"name": "x", "steps": [{"say": "hours?", "expect": {"judged": "offers a day"}}]})
    verdict = await judge_call(scenario, _call([_turn(0, 2.0, 3.0, 3.6)]), RECORD, judge)
    check = verdict.steps[0].checks[0]
    assert (check.what, check.passed, check.detail) == ("judged: offers a day", False, "FAIL: no day offered")
    monday = {**RECORD, "transcript": [*RECORD["transcript"][:2], {"role": "agent", "text": "Monday at nine.", "t": 3.1}]}
    verdict = await judge_call(scenario, _call([_turn(0, 2.0, 3.0, 3.6)]), monday, judge)
    assert verdict.steps[0].checks[0].passed and verdict.steps[0].checks[0].detail == "PASS: it offers a day"
    without = await judge_call(scenario, _call([_turn(0, 2.0, 3.0, 3.6)]), monday)
    assert without.failures() == ["step 1 (says \"hours?\"): judged: offers a day: no LLM judge configured (give --judge-url)"]


async def test_a_late_stop_after_the_caller_spoke_is_not_a_false_barge_in() -> None:
    scenario = Scenario.model_validate({"name": "x", "steps": [{"say": "hi"}]})
    unanswered = _turn(0, 2.0, 3.0, 3.6).model_copy(update={"agent_audio_start_s": None, "voice_to_voice_ms": None})
    verdict = await judge_call(scenario, _call([unanswered], clears=[6.0]), RECORD)
    assert not any("false barge-in" in f for f in verdict.failures()), verdict.failures()


def test_caller_actions_the_agent_did_not_answer_between_are_replayed_as_one() -> None:
    from switchboard.testing.replay import _unanswered_joined

    keys = [CallerAction(2.0, 2.0, keys="4"), CallerAction(2.5, 2.5, keys="1"), CallerAction(6.0, 6.0, keys="9")]
    joined = _unanswered_joined(keys, lines=[0.1, 3.0], caller=np.zeros(16000 * 8, dtype=np.int16), rate=16000)
    assert [(a.keys, a.start_s, a.end_s) for a in joined] == [("41", 2.0, 2.5), ("9", 6.0, 6.0)]


def test_redacted_key_presses_are_refused_and_redacted_digits_said_so() -> None:
    redacted = {**RECORD, "events": [{"event": "keypad", "digit": "[KEYPAD]", "intent": "hours", "at_s": 2.0}]}
    with pytest.raises(Refused, match="key presses are redacted in the record .* cannot be replayed"):
        plan_replay("call-1", redacted, _flac(2))
    from switchboard.testing.judge import _digits_check

    check = _digits_check("1234", ["[KEYPAD]"])
    assert check.passed and "redacted in the record" in check.detail
    assert not _digits_check("1234", ["99"]).passed


@dataclass
class EmptyPool:
    url: str
    redis_url: str


@pytest.fixture(scope="module")
async def empty_pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmptyPool]:
    """Redis and an orchestrator (in the test's loop) with no worker: every new call is refused busy."""
    from switchboard.orchestrator.app import create_orchestrator_app

    data = tmp_path_factory.mktemp("empty-pool")
    redis_server = start_redis(tmp_path_factory.mktemp("empty-pool-redis"))
    port = free_port()
    settings = Settings(
        host="127.0.0.1", port=port, redis_url=redis_server.url, api_key=SecretStr("operator-key"),
        database_url=f"sqlite:///{data}/calls.db", recordings_url=str(data / "recordings"),
    )  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(create_orchestrator_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, it has no event
                await asyncio.sleep(0.02)
        yield EmptyPool(f"http://127.0.0.1:{port}", redis_server.url)
    finally:
        server.should_exit = True
        await serving
        redis_server.stop()


class _KeyedCall(_History):
    """A recorded call whose caller pressed 1 once greeted (no speech to cut)."""

    async def record(self, call_id: str) -> dict | None:
        events = [{"event": "keypad", "digit": "1", "intent": "hours", "at_s": 2.0}]
        return {**RECORD, "recording": {"key": "k"}, "events": events} if call_id == "call-1" else None

    async def recording(self, call_id: str) -> bytes | None:
        return _flac(2)


async def test_a_replay_turned_away_busy_is_reported_not_answered_never_as_a_different_action(empty_pool: EmptyPool) -> None:
    calls = CallsClient(empty_pool.url, "operator-key")
    try:
        result = await replay_one("call-1", ReplayOptions(url=empty_pool.url, against=empty_pool.url), _KeyedCall(), calls)  # type: ignore[arg-type]
    finally:
        await calls.close()
    assert result.verdict == "not answered" and not result.passed and result.turns == []
    assert result.error is not None and result.error.startswith("call-1: not answered: busy (the stack said \"Sorry, all of our agents are busy")


async def test_a_record_still_unsaved_after_the_wait_is_an_error_not_an_empty_record(empty_pool: EmptyPool) -> None:
    client = aioredis.from_url(empty_pool.redis_url, decode_responses=True)
    try:
        await CallLedger(client, ttl_secs=60).record("call-CAunsaved", CallStatus.COMPLETED)
    finally:
        await client.aclose()
    calls = CallsClient(empty_pool.url, "operator-key")
    try:
        with pytest.raises(CallsAPIError, match="the record of call CAunsaved was not saved .* within 0.5 s \\(its live state: completed\\)"):
            await calls.finished_record("CAunsaved", wait_s=0.5)
    finally:
        await calls.close()
