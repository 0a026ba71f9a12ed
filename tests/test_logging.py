"""Structured logs: JSON lines in production, each line of a call tagged with its call id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from loguru import logger

from conftest import free_port
from switchboard.observability.logging import call_context, configure_logging


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", "json", role="worker:test", stream=stream)
    yield stream
    configure_logging("INFO", "text", role="test")


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def by_message(stream: io.StringIO) -> dict[str, dict]:
    return {line["message"]: line for line in lines(stream)}


def test_json_lines_inside_a_call_carry_its_id_and_lines_outside_do_not(
    json_stream: io.StringIO,
) -> None:
    logger.info("before")
    with call_context("call-CA42"):
        logger.info("during {}", "the call")
        logging.getLogger("uvicorn.error").warning("stdlib line")
    logger.info("after")

    seen = by_message(json_stream)
    assert seen["during the call"]["call_id"] == "call-CA42"
    assert seen["stdlib line"]["call_id"] == "call-CA42"
    assert "call_id" not in seen["before"] and "call_id" not in seen["after"]
    assert all(
        line["role"] == "worker:test" and line["level"] and line["ts"] for line in seen.values()
    )


async def test_concurrent_calls_keep_their_own_ids_in_tasks_and_threads(
    json_stream: io.StringIO,
) -> None:
    async def call(call_id: str) -> None:
        with call_context(call_id):

            async def pipeline_task() -> None:
                await asyncio.sleep(0)
                logger.info(f"task of {call_id}")

            await asyncio.gather(pipeline_task(), pipeline_task())
            await asyncio.to_thread(lambda: logger.info(f"thread of {call_id}"))

    await asyncio.gather(call("call-A"), call("call-B"))

    ours = [
        line for line in lines(json_stream) if line["message"].startswith(("task of", "thread of"))
    ]
    assert len(ours) == 6
    for line in ours:
        assert line["message"].endswith(line["call_id"]), line


def test_an_exception_stays_on_one_json_line_with_the_call_id(json_stream: io.StringIO) -> None:
    with call_context("call-CA7"):
        try:
            raise ValueError("engine broke")
        except ValueError:
            logger.exception("pipeline failed")

    (line,) = lines(json_stream)
    assert line["call_id"] == "call-CA7"
    assert line["level"] == "ERROR"
    assert "ValueError: engine broke" in line["exception"]


def test_text_lines_show_the_role_and_call_id() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", role="orchestrator", stream=stream)
    try:
        with call_context("call-CA9"):
            logger.info("reserved a slot {not a field}")
        logger.info("idle")
    finally:
        configure_logging("INFO", "text", role="test")
    during, idle = stream.getvalue().splitlines()
    assert "orchestrator call-CA9 reserved a slot {not a field}" in during
    assert "call-" not in idle and idle.endswith("orchestrator idle")


def test_a_real_process_in_json_mode_writes_only_json_lines() -> None:
    """Every stderr line of an orchestrator (uvicorn's included) parses as JSON with its role."""
    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_LOG_FORMAT": "json",
        # Nothing listens there: the orchestrator logs a warning we can look for.
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli", "orchestrator", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "orchestrator exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "orchestrator never became live"
            time.sleep(0.1)
    finally:
        process.terminate()
        try:
            _out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # never left running, whatever it logged
            _out, err = process.communicate()

    parsed = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert parsed, "no log lines"
    assert {line["role"] for line in parsed} == {"orchestrator"}
    assert any("redis not reachable" in line["message"] for line in parsed)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_a_callers_words_reach_the_log_only_at_debug(level: str) -> None:
    from pipecat.frames.frames import LLMContextFrame
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.tests.utils import SleepFrame, run_test

    from conftest import TEST_AGENT
    from switchboard.agent.config import load_agent_config
    from switchboard.agent.intents import IntentMatcher
    from switchboard.engines.scripted import ScriptedResponder

    said = "my account number is 4417 1234 and my name is Ada Lovelace"
    stream = io.StringIO()
    configure_logging(level, "text", role="worker:test", stream=stream)
    try:
        responder = ScriptedResponder(IntentMatcher(load_agent_config(TEST_AGENT)))
        context = LLMContext(messages=[{"role": "user", "content": said}])
        await run_test(
            responder, frames_to_send=[LLMContextFrame(context), SleepFrame(0.1)],
            expected_down_frames=None,
        )  # fmt: skip
    finally:
        configure_logging("INFO", "text", role="test")
    assert (said in stream.getvalue()) == (level == "DEBUG"), stream.getvalue()[-2000:]
