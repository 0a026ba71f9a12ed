"""End to end: the shipped bike-shop suite's LLM-simulated caller calls an LLM agent through the
real telephony path. Its lines are written turn by turn by the LLM emulator playing the caller
(examples/emulator/bike_shop_caller.rules.yaml) from what it heard, spoken in the caller's voice,
and the call is judged from the agent's record, the caller's goal and a `judged:` criterion.

The pool is the module's own (Redis, an orchestrator and a worker whose responder is the LLM
emulator playing the bike shop's model): the shared stack runs the scripted test agent, and the
responder is a process-wide setting.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import process_guard
from conftest import (
    API_KEY,
    REPO,
    Server,
    ServerGroup,
    _spawn,
    free_port,
    start_redis,
    wait_for,
    wait_healthy,
)
from switchboard.testing.chat import ChatLLM
from switchboard.testing.judge import LLMJudge
from switchboard.testing.report import format_summary, write_outputs
from switchboard.testing.runner import RunOptions, run_suite
from switchboard.testing.scenario import load_suite

EXAMPLES = REPO / "examples"
SUITE = EXAMPLES / "suites" / "bike_shop.yaml"
AGENT = EXAMPLES / "agents" / "bike_shop.yaml"


def _emulator(rules: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "switchboard.emulators", "llm", "--port", str(port), "--profile", "instant", "--rules", str(rules)]
    return _spawn(argv, "emulator-llm", port, None)


class Pool:
    def __init__(self, orchestrator: Server, caller_llm: Server):
        self.orchestrator, self.caller_llm = orchestrator, caller_llm


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """Everything started side by side (the worker's models load while the rest start)."""
    with ServerGroup() as group:
        redis = group.add(start_redis(tmp_path_factory.mktemp("sim-redis")))
        agent_llm = group.add(_emulator(EXAMPLES / "emulator" / "bike_shop_agent.rules.yaml"))
        caller_llm = group.add(_emulator(EXAMPLES / "emulator" / "bike_shop_caller.rules.yaml"))
        common = {"SWITCHBOARD_REDIS_URL": redis.url, "SWITCHBOARD_INFERENCE_THREADS": "1", "SWITCHBOARD_LOG_LEVEL": "INFO"}
        port = free_port()
        orchestrator = group.add(_spawn(
            [sys.executable, "-m", "switchboard.cli", "orchestrator", "--port", str(port)], "orchestrator", port,
            {**common, "SWITCHBOARD_RATE_LIMIT_OPERATOR": "100000/minute"},
        ))  # fmt: skip
        port = free_port()
        worker = group.add(_spawn(
            [sys.executable, "-m", "switchboard.cli", "worker", "--port", str(port), "--worker-id", "sim-w1",
             "--max-calls", "1", "--agent", str(AGENT)],
            "sim-w1", port,
            {**common, "SWITCHBOARD_ADMISSION": "slots", "SWITCHBOARD_RESPONDER": "openai",
             "SWITCHBOARD_LLM_BASE_URL": agent_llm.base_url + "/v1", "OPENAI_API_KEY": "sk-agent-emulated"},
        ))  # fmt: skip
        for server, path in ((agent_llm, "/health"), (caller_llm, "/health"), (orchestrator, "/health/live"), (worker, "/health")):
            wait_healthy(server.base_url, server.process, path=path)
        wait_for(
            lambda: httpx.get(f"{orchestrator.base_url}/stats", headers={"X-API-Key": API_KEY}, timeout=5).json()["workers"],
            30, what="the worker registered",
        )  # fmt: skip
        pids = [s.process.pid for s in (redis, agent_llm, caller_llm, orchestrator, worker) if s.process]
        for pid in pids:
            process_guard.own_for_session(pid)
        try:
            yield Pool(orchestrator, caller_llm)
        finally:
            for pid in pids:
                process_guard.release(pid)


def test_a_simulated_caller_books_a_service_with_an_llm_agent(pool: Pool, tmp_path: Path) -> None:
    caller_api = pool.caller_llm.base_url + "/v1"
    turns: list[str] = []
    options = RunOptions(
        url=pool.orchestrator.base_url, api_key=API_KEY, parallel=1, out_dir=tmp_path,
        caller_llm=ChatLLM(caller_api, "caller-emulated", "openai", "sk-caller-emulated"),
        judge=LLMJudge(caller_api, api_key="sk-caller-emulated"), turn_progress=turns.append,
    )  # fmt: skip
    run = asyncio.run(run_suite(load_suite(SUITE), options))
    (result,) = run.scenarios
    assert run.passed, format_summary(run) + "\n" + "\n".join(turns)
    assert result.caller is not None
    # Each line answers what the caller heard: the greeting, then the booking.
    assert result.caller.lines == ["I would like to book a brake service for Thursday morning.", "That is all thank you goodbye."]
    assert result.caller.ending == "goal_reached" and result.ended_by == "agent"
    # What the agent said (its record) after each line, and what the caller heard of it (Whisper).
    assert "booked in for Thursday" in result.steps[0].replied and "thursday" in result.steps[0].caller_heard.lower()
    assert [c.what for c in result.checks if c.what.startswith("judged")] == [
        "judged: The agent booked the service and said which day and time."
    ]
    assert len([t for t in turns if "[turn" in t]) == 2
    assert turns[-1].endswith("the caller reached its goal: the service is booked for Thursday at nine")
    page = write_outputs(run, tmp_path)["html"].read_text()
    assert "That is all thank you goodbye." in page and "simulated caller: Sam, a commuter" in page
