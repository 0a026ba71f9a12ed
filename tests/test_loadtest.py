"""The load generator against a real local agent, its verdicts, scenario, clarity and HTML report."""

from __future__ import annotations

import argparse
import base64
import csv
import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
import soundfile as sf

from conftest import TEST_AGENT, free_port
from switchboard.agent.config import load_agent_config
from switchboard.loadtest.clarity import ClarityJudge, word_accuracy
from switchboard.loadtest.commands import add_commands
from switchboard.loadtest.loadgen import LoadTestConfig, judge, run_load_test
from switchboard.loadtest.report import CallOutcome, CallResult, GreetingResult, TurnResult
from switchboard.loadtest.scenario import (
    GOODBYE_CLIP,
    MULTI_PHRASE_CLIPS,
    Scenario,
    ScenarioOptions,
)

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = {"latency_histogram", "latency_cdf", "latency_over_time", "concurrency", "outcomes", "clarity"}


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="switchboard")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


class _Checker(HTMLParser):
    """Fails on unbalanced tags; collects image sources and external references."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for key in ("src", "href"):
            if (values.get(key) or "").startswith(("http:", "https:", "//")):
                self.external.append(values[key] or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


@pytest.fixture(scope="module")
def loadtest_out(agent_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """Three concurrent calls of the default scenario through the CLI, every call recorded."""
    out = tmp_path_factory.mktemp("loadtest")
    code = _cli([
        "loadtest", "--url", agent_url, "--concurrency", "3", "--calls", "3", "--ramp-up", "0.5",
        "--min-turns", "1", "--max-turns", "1", "--barge-in-probability", "0",
        "--record-fraction", "1", "--agent", str(TEST_AGENT), "--out", str(out),
        "--png-dir", str(out / "png"), "--quiet",
    ])
    return code, out


def test_loadtest_runs_concurrent_calls_and_writes_every_output(loadtest_out) -> None:
    code, out = loadtest_out
    data = json.loads((out / "results.json").read_text())
    calls = data["calls"]
    assert len(calls) == 3 and data["summary"]["peak_concurrency"] == 3
    assert [c["verdict"]["reason"] for c in calls] == [None, None, None]
    assert code == (0 if all(v is not False for v in data["summary"]["targets_met"].values()) else 1)
    turns = list(csv.DictReader((out / "turns.csv").read_text().splitlines()))
    assert len(turns) == sum(len(c["result"]["turns"]) for c in calls) == 6
    assert all(0 < float(t["voice_to_voice_ms"]) < 3000 for t in turns)
    assert turns[-1]["clip"] == GOODBYE_CLIP
    assert len(list(csv.DictReader((out / "calls.csv").read_text().splitlines()))) == 3
    for c in calls:
        info = sf.info(c["result"]["recording"])
        assert (info.channels, info.samplerate) == (2, 8000)
    assert {p.stem for p in (out / "png").glob("*.png")} == PLOTS
    assert all(p.read_bytes().startswith(PNG) for p in (out / "png").glob("*.png"))


def test_loadtest_measures_clarity_of_the_recorded_replies(loadtest_out) -> None:
    _, out = loadtest_out
    data = json.loads((out / "results.json").read_text())
    # Each call: greeting, one reply, goodbye — all heard to the end.
    assert len(data["clarity"]) == 9
    assert data["summary"]["clarity"] > 0.8
    agent = load_agent_config(TEST_AGENT)
    assert {c["reference"] for c in data["clarity"]} <= set(agent.fixed_utterances())


def test_html_report_is_valid_self_contained_and_has_every_plot(loadtest_out) -> None:
    _, out = loadtest_out
    checker = _Checker()
    checker.feed((out / "report.html").read_text())
    checker.close()
    assert checker.stack == ["html"] or checker.stack == []
    assert checker.external == []
    assert len(checker.images) == len(PLOTS)
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)


def test_unreachable_target_fails_every_call_with_the_reason(tmp_path: Path) -> None:
    config = LoadTestConfig(url=f"http://127.0.0.1:{free_port()}", concurrency=2, calls=3,
                            out_dir=tmp_path, network_timeout_s=2)
    run = run_load_test(config)
    assert len(run.calls) == 3
    assert all(not c.verdict.success and not c.verdict.connected for c in run.calls)
    assert {c.verdict.reason for c in run.calls} == {"webhook_error: ConnectError"}


def test_calls_spread_over_processes_all_come_back(agent_url: str, tmp_path: Path) -> None:
    config = LoadTestConfig(url=agent_url, concurrency=2, calls=2, processes=2, out_dir=tmp_path,
                            record_fraction=0, scenario=ScenarioOptions(min_turns=0, max_turns=0))
    seen = []
    run = run_load_test(config, on_progress=seen.append, progress_interval_s=0.5)
    assert sorted(c.index for c in run.calls) == [0, 1]
    assert all(c.verdict.success for c in run.calls), [c.verdict.reason for c in run.calls]
    assert run.cpu_s > 0 and seen[-1].done == 2 and seen[-1].active == 0


def _result(**kw) -> CallResult:
    base = dict(call_sid="CA1", stream_sid="MZ1", base_url="x", outcome=CallOutcome.AGENT_HUNG_UP,
                started_at=datetime.now(UTC), duration_s=5.0,
                greeting=GreetingResult(latency_ms=100, start_s=0.1))
    return CallResult(**{**base, **kw})


def _turn(v2v: float | None, failure: str | None = None) -> TurnResult:
    return TurnResult(index=0, clip="a.wav", caller_speech_start_s=1, caller_speech_end_s=2,
                      voice_to_voice_ms=v2v, failure=failure)


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (_result(turns=[_turn(400)]), None),
        (_result(stream_sid=None, outcome=CallOutcome.FAILED, reason="webhook_status_503", greeting=None), "webhook_status_503"),
        (_result(greeting=None, outcome=CallOutcome.FAILED, reason="no_greeting"), "no_greeting"),
        (_result(turns=[_turn(None, "no_reply")], outcome=CallOutcome.FAILED, reason="no_reply"), "no_reply"),
        (_result(turns=[_turn(3500)]), "slow_reply"),
        (_result(turns=[_turn(400)], outcome=CallOutcome.FAILED, reason="no_hangup"), "no_hangup"),
    ],
)
def test_call_verdict_names_the_first_thing_that_went_wrong(result: CallResult, reason: str | None) -> None:
    verdict = judge(result, deadline_ms=3000)
    assert verdict.reason == reason and verdict.success == (reason is None)


def test_recorded_calls_are_evenly_spaced_and_capped() -> None:
    config = LoadTestConfig(url="x", record_fraction=0.25, max_recordings=3)
    assert [i for i in range(40) if config.recorded(i)] == [0, 4, 8]
    assert all(LoadTestConfig(url="x", record_fraction=1, max_recordings=99).recorded(i) for i in range(10))


def test_scenario_is_reproducible_and_ends_with_the_goodbye() -> None:
    scenario = Scenario(ScenarioOptions(barge_in_probability=0.5), seed=7)
    a, b = scenario.script(3), scenario.script(3)
    assert a == b and a != scenario.script(4)
    assert a.turns[-1].audio.name == GOODBYE_CLIP and a.turns[-1].hangup_expected
    assert a.turns[-1].barge_in_after_ms is None
    assert all(t.audio.name not in MULTI_PHRASE_CLIPS and t.expected_text for t in a.turns)
    assert 3 <= len(a.turns) <= 5
    scripts = [scenario.script(i) for i in range(30)]
    assert any(t.barge_in_after_ms for s in scripts for t in s.turns)


def test_word_accuracy_counts_substitutions_insertions_and_deletions() -> None:
    assert word_accuracy("You talked about food.", "you talked about food") == 1.0
    assert word_accuracy("Moving forward now.", "moving forwards now") == pytest.approx(2 / 3)
    assert word_accuracy("Moving forward now.", "moving now") == pytest.approx(2 / 3)
    assert word_accuracy("a b", "a b c d e") == 0.0


def test_clarity_judge_picks_the_closest_utterance() -> None:
    judge_ = ClarityJudge(load_agent_config(TEST_AGENT))
    reference, errors, words = judge_.closest("thank you for calling good bye")
    assert reference == "Thank you for calling, goodbye." and (errors, words) == (2, 5)
