"""Running a suite: each scenario is a real simulated Twilio call, several at once, judged from
the caller's measurements and the agent's stored record."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from switchboard.loadtest.caller import CallerTurn, CallScript, preload_clips, run_call
from switchboard.testing.calls_client import CallsAPIError, CallsClient
from switchboard.testing.chat import ChatError, ChatLLM
from switchboard.testing.judge import LLMJudge, judge_call
from switchboard.testing.results import ScenarioResult, SuiteResult
from switchboard.testing.scenario import Scenario, Suite
from switchboard.testing.simulated import CallerBrain
from switchboard.testing.voice import DEFAULT_CACHE, spoken_clip

_HANGUP_WAIT_MS = 30_000  # a goodbye, or the last re-prompt's timer, before the agent hangs up
# Agent silence that ends a reply. A busy agent can pause between two sentences of one line for
# most of a second; taking that for the end would start the next step over the rest of it.
_REPLY_ENDS_AFTER_MS = 1_200


@dataclass(frozen=True)
class RunOptions:
    """Where and how a suite runs."""

    url: str = "http://127.0.0.1:8080"
    api_key: str = ""
    auth_token: str | None = None
    parallel: int = 4
    out_dir: Path | None = None
    voice_cache: Path = DEFAULT_CACHE
    judge: LLMJudge | None = None
    twilio_api: str | None = None
    caller_llm: ChatLLM | None = None  # writes the lines of scenarios with a simulated caller
    turn_progress: Callable[[str], None] | None = None  # a line per simulated caller's turn


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "scenario"


def script_of(scenario: Scenario, voice_cache: Path = DEFAULT_CACHE) -> CallScript:
    """The caller simulator's script for a scenario: its lines spoken into clips (cached)."""
    turns = []
    for step in scenario.steps:
        audio = step.audio or (spoken_clip(step.say, scenario.voice or "caller", voice_cache) if step.say else None)
        turns.append(
            CallerTurn(
                audio=audio,
                dtmf=step.press,
                pause_before_ms=step.pause_ms,
                barge_in_after_ms=step.barge_in_after_ms,
                reply_timeout_ms=round(step.silence_secs * 1000) if step.silence_secs is not None else None,
            )
        )
    if turns and scenario.agent_hangs_up:
        turns[-1] = turns[-1].model_copy(update={"hangup_expected": True})
    return CallScript(
        turns=turns,
        to_number=scenario.to or CallScript().to_number,
        reply_timeout_ms=scenario.reply_timeout_ms or CallScript().reply_timeout_ms,
        hangup_timeout_ms=_HANGUP_WAIT_MS,
        greeting_timeout_ms=15_000,
        agent_done_silence_ms=_REPLY_ENDS_AFTER_MS,
    )


async def run_scenario(scenario: Scenario, options: RunOptions, calls: CallsClient) -> ScenarioResult:
    """One scenario's call, then its verdict; errors of the set-up become a failed result."""
    started = time.monotonic()
    try:
        brain = None
        if scenario.caller is not None:
            if options.caller_llm is None:
                raise ValueError("the scenario has a simulated caller and no caller LLM is configured (give --caller-llm-url)")
            brain = CallerBrain(scenario, options.caller_llm, options.voice_cache, options.turn_progress)
            await brain.prepare()
        script = await asyncio.to_thread(script_of, scenario, options.voice_cache)
        await asyncio.to_thread(preload_clips, [t.audio for t in script.turns if t.audio], script)
        record_path = options.out_dir / "calls" / f"{slug(scenario.name)}.wav" if options.out_dir else None
        result = await run_call(
            options.url,
            script,
            auth_token=options.auth_token,
            record_path=record_path,
            transcribe=False,
            max_call_s=scenario.timeout_secs,
            twilio_api=options.twilio_api,
            turn_source=brain,
        )
        record = await calls.finished_record(result.call_sid) if result.stream_sid else {}
        if brain is not None:
            return await brain.verdict(result, record, options.judge)
        return await judge_call(scenario, result, record, options.judge)
    except (CallsAPIError, ChatError, OSError, ValueError, RuntimeError) as e:
        return ScenarioResult(
            name=scenario.name, passed=False, duration_s=round(time.monotonic() - started, 1), error=f"{type(e).__name__}: {e}"
        )


async def run_suite(
    suite: Suite, options: RunOptions, progress: Callable[[ScenarioResult, int, int], None] | None = None
) -> SuiteResult:
    """Every scenario of ``suite``, ``options.parallel`` calls at a time, in the suite's order."""
    started = time.monotonic()
    gate = asyncio.Semaphore(max(1, options.parallel))
    calls = CallsClient(options.url, options.api_key)
    done = 0

    async def one(scenario: Scenario) -> ScenarioResult:
        nonlocal done
        async with gate:
            result = await run_scenario(scenario, options, calls)
        done += 1
        if progress is not None:
            progress(result, done, len(suite.scenarios))
        return result

    try:
        results = await asyncio.gather(*(one(s) for s in suite.scenarios))
    finally:
        await calls.close()
    return SuiteResult(
        suite=suite.name,
        url=options.url,
        wall_s=round(time.monotonic() - started, 1),
        parallel=options.parallel,
        scenarios=list(results),
    )
