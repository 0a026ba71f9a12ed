"""Pipecat's cloud services in real calls, against the provider emulators: engines, fallback, secrets, scale."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from conftest import (
    OPERATOR,
    REPLIES,
    TEST_AGENT,
    Clip,
    Server,
    ServerGroup,
    agent_lines,
    metric,
    start_agent_server,
    start_orchestrator,
    start_redis,
    stored_call,
    wait_for,
)
from switchboard.agent.config import load_agent_config
from switchboard.agent.intents import IntentMatcher, normalize
from switchboard.engines.resilience import (
    BreakerState,
    CircuitBreaker,
    EngineKind,
    FallbackSwitcher,
)
from switchboard.engines.scripted import ScriptedResponder
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, format_summary
from test_emulators import start_emulator, stats

SECRETS = {
    "DEEPGRAM_API_KEY": "dg-test-SECRET456",
    "ELEVENLABS_API_KEY": "el-test-SECRET789",
    "OPENAI_API_KEY": "sk-test-SECRET123",
    "ANTHROPIC_API_KEY": "sk-ant-test-SECRET000",
}
CANOE, RICE = "osr_us_0010_s01_8k.wav", "osr_us_0010_s05_8k.wav"


@dataclass
class Emulators:
    deepgram: Server
    elevenlabs: Server
    llm: Server

    def env(
        self, *, stt: str = "deepgram", tts: str = "elevenlabs", responder: str = "openai"
    ) -> dict[str, str]:
        llm_root = self.llm.base_url + ("/v1" if responder == "openai" else "")
        return {
            **SECRETS,
            "SWITCHBOARD_STT_ENGINE": stt,
            "SWITCHBOARD_TTS_ENGINE": tts,
            "SWITCHBOARD_RESPONDER": responder,
            "SWITCHBOARD_DEEPGRAM_URL": self.deepgram.base_url.replace("http://", "ws://"),
            "SWITCHBOARD_ELEVENLABS_URL": self.elevenlabs.base_url.replace("http://", "ws://"),
            "SWITCHBOARD_LLM_BASE_URL": llm_root,
        }

    def stop(self) -> None:
        for server in (self.deepgram, self.elevenlabs, self.llm):
            server.stop()

    def kill(self) -> None:
        for server in (self.deepgram, self.elevenlabs, self.llm):
            server.process.kill()
            server.process.wait()


def start_emulators(transcripts: Path, profile: str = "published") -> Emulators:
    return Emulators(
        start_emulator("deepgram", "--transcripts", str(transcripts), "--profile", profile),
        start_emulator("elevenlabs", "--profile", profile),
        start_emulator("llm", "--profile", profile),
    )


@pytest.fixture(scope="module")
def transcripts(tmp_path_factory: pytest.TempPathFactory, speech_clips: dict[str, Clip]) -> Path:
    """What the Deepgram emulator 'hears', in order: the transcripts of the clips the caller plays."""
    path = tmp_path_factory.mktemp("scenario") / "transcripts.txt"
    path.write_text(f"{speech_clips[CANOE].transcript}\n{speech_clips[RICE].transcript}\n")
    return path


@pytest.fixture(scope="module")
def emulators(transcripts: Path) -> Iterator[Emulators]:
    emulators = start_emulators(transcripts)
    yield emulators
    emulators.stop()


@pytest.fixture(scope="module")
def cloud_agent(emulators: Emulators) -> Iterator[Server]:
    """Deepgram + ElevenLabs + OpenAI, all three against their emulators."""
    server = start_agent_server(env=emulators.env())
    yield server
    server.stop()


def two_turns(speech_clips: dict[str, Clip], pause_ms: int = 500) -> CallScript:
    return CallScript(
        turns=[
            CallerTurn(audio=speech_clips[CANOE].path),
            CallerTurn(audio=speech_clips[RICE].path, pause_before_ms=pause_ms),
        ]
    )


def every_turn_answered(result) -> bool:
    return all(t.agent_audio_start_s is not None for t in result.turns)


async def test_call_runs_on_deepgram_elevenlabs_and_openai_through_their_emulators(
    cloud_agent: Server, emulators: Emulators, speech_clips: dict[str, Clip]
) -> None:
    result = await run_call(cloud_agent.base_url, two_turns(speech_clips), transcribe=False)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.greeting is not None and every_turn_answered(result), summary

    # The LLM heard Deepgram's transcripts, with the system prompt and the call's memory.
    requests = [r for r in stats(emulators.llm)["items"] if r["api"] == "openai"][-2:]
    first, second = requests[0]["messages"], requests[1]["messages"]
    assert first[0]["role"] == "system"
    assert first[-1] == {"role": "user", "content": speech_clips[CANOE].transcript}
    assert second[-1] == {"role": "user", "content": speech_clips[RICE].transcript}
    assert any(m["role"] == "assistant" and "canoe" in m["content"] for m in second), second
    # ElevenLabs spoke the greeting and the LLM's replies, sentence by sentence.
    spoken = " ".join(stats(emulators.elevenlabs)["items"])
    assert "test line" in spoken and "You said: The birch canoe" in spoken
    assert metric(cloud_agent.base_url, "provider_fallbacks_total", provider="deepgram") == 0


def test_secrets_never_reach_the_log(cloud_agent: Server) -> None:
    log = cloud_agent.log()
    assert "deepgram" in log.lower()  # the log is the one of a server that used them
    for secret in SECRETS.values():
        assert secret not in log


async def test_anthropic_responder_with_deepgram_and_local_piper(
    emulators: Emulators, speech_clips: dict[str, Clip]
) -> None:
    server = start_agent_server(env=emulators.env(tts="piper", responder="anthropic"))
    try:
        script = CallScript(turns=[CallerTurn(audio=speech_clips[CANOE].path)])
        result = await run_call(server.base_url, script, transcribe=False)
        summary = format_summary(result)
        assert result.outcome == CallOutcome.COMPLETED and every_turn_answered(result), summary
        said = agent_lines(await stored_call(result.call_sid))
        assert "birch" in said[-1] and "planks" in said[-1], said  # Piper spoke the echoed transcript
        request = [r for r in stats(emulators.llm)["items"] if r["api"] == "anthropic"][-1]
        assert (
            request["system"]
            and request["messages"][-1]["content"] == speech_clips[CANOE].transcript
        )
        for secret in SECRETS.values():
            assert secret not in server.log()
    finally:
        server.stop()


async def test_call_falls_back_to_local_engines_when_the_providers_die_mid_call(
    transcripts: Path, speech_clips: dict[str, Clip]
) -> None:
    emulators = start_emulators(transcripts)
    server = start_agent_server(
        env={**emulators.env(), "SWITCHBOARD_BREAKER_FAILURE_THRESHOLD": "1"}
    )
    try:
        call = asyncio.create_task(
            run_call(server.base_url, two_turns(speech_clips, pause_ms=1500), transcribe=False)
        )
        # Crash all three (SIGKILL: no goodbye on any socket) while the first turn's reply is streaming.
        await asyncio.to_thread(
            wait_for,
            lambda: stats(emulators.llm)["connections"] >= 1,
            30,
            0.05,
            "first LLM request",
        )
        emulators.kill()
        result = await call
        summary = format_summary(result)
        assert result.outcome == CallOutcome.COMPLETED, summary
        assert every_turn_answered(result), summary
        # The second turn went through Whisper and the scripted agent, spoken by Piper.
        said = agent_lines(await stored_call(result.call_sid))
        assert said[-1] == REPLIES["food"], said
        for provider in ("deepgram", "elevenlabs", "openai"):
            assert metric(server.base_url, "provider_fallbacks_total", provider=provider) >= 1, provider
            assert metric(server.base_url, "engine_errors_total", engine=provider) >= 1, provider

        # The breakers are open now: the next call goes straight to the local engines.
        result = await run_call(
            server.base_url, CallScript(turns=[CallerTurn(audio=speech_clips[RICE].path)]), transcribe=False
        )
        assert result.outcome == CallOutcome.COMPLETED and every_turn_answered(result), format_summary(result)
        assert agent_lines(await stored_call(result.call_sid))[1:] == [REPLIES["food"]]
        assert "breaker open" in server.log()
    finally:
        server.stop()
        emulators.stop()


async def test_an_utterance_deepgram_dies_in_is_heard_whole_by_the_fallback(
    transcripts: Path, speech_clips: dict[str, Clip]
) -> None:
    emulators = start_emulators(transcripts)
    server = start_agent_server(env=emulators.env())
    try:
        call = asyncio.create_task(
            run_call(
                server.base_url, CallScript(turns=[CallerTurn(audio=speech_clips[CANOE].path)]), transcribe=False
            )
        )
        # The emulator starts an utterance when it hears the caller begin; Deepgram dies 1.2 s
        # into it, after the VAD's start (0.2 s) and "the birch canoe" (the first 0.9 s).
        await asyncio.to_thread(
            wait_for, lambda: stats(emulators.deepgram)["items"], 30, 0.02, "caller speech at Deepgram"
        )
        await asyncio.sleep(1.2)
        emulators.deepgram.process.kill()
        result = await call
        assert result.outcome == CallOutcome.COMPLETED and every_turn_answered(result), format_summary(result)
        # Whisper got the utterance from its start, not only what was said after the crash.
        asked = [r for r in stats(emulators.llm)["items"] if r["api"] == "openai"][-1]["messages"][-1]
        heard = normalize(asked["content"])
        assert "birch" in heard or "canoe" in heard, asked
        assert metric(server.base_url, "provider_fallbacks_total", provider="deepgram") == 1
    finally:
        server.stop()
        emulators.stop()


async def test_ten_concurrent_calls_through_orchestrator_workers_and_emulators(
    tmp_path: Path, transcripts: Path, speech_clips: dict[str, Clip]
) -> None:
    emulators = start_emulators(transcripts, profile="published")
    with ServerGroup() as group:
        group.add(emulators)
        redis = group.add(start_redis(tmp_path))
        env = emulators.env()
        orchestrator = group.add(start_orchestrator(redis.url, env))
        workers = group.start_workers(redis.url, ["cloud0", "cloud1"], max_calls=5, env=env)
        wait_for(
            lambda: (
                len(httpx.get(f"{orchestrator.base_url}/stats", headers=OPERATOR, timeout=5).json()["workers"]) == 2
            ),
            30,
            what="2 workers registered",
        )
        script = CallScript(turns=[CallerTurn(audio=speech_clips[CANOE].path)])
        results = await asyncio.gather(
            *[run_call(orchestrator.base_url, script, transcribe=False) for _ in range(10)]
        )
        for result in results:
            assert result.outcome == CallOutcome.COMPLETED and every_turn_answered(result), format_summary(
                result
            )
        assert stats(emulators.deepgram)["connections"] >= 10
        assert (
            sum(
                metric(w.base_url, "provider_fallbacks_total", provider=p)
                for w in workers
                for p in ("deepgram", "elevenlabs", "openai")
            )
            == 0
        )


class _Unresponsive(FrameProcessor):
    """A provider that accepts work and never answers (a hung LLM or TTS)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame | TTSSpeakFrame | LLMTextFrame):
            await self.push_frame(frame, direction)


class _Echo(FrameProcessor):
    """A stand-in local TTS that passes what it is asked to say downstream."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


def _switcher(
    primary: FrameProcessor, fallback: FrameProcessor, kind: EngineKind
) -> tuple[FallbackSwitcher, CircuitBreaker]:
    breaker = CircuitBreaker(f"slow-{kind}", failure_threshold=1, reset_secs=60)
    return FallbackSwitcher(
        primary,
        fallback,
        provider=f"slow-{kind}",
        kind=kind,
        breaker=breaker,
        response_timeout_secs=0.2,
    ), breaker


async def test_a_hung_llm_is_replaced_by_the_scripted_responder_within_the_timeout() -> None:
    matcher = IntentMatcher(load_agent_config(TEST_AGENT))
    switcher, breaker = _switcher(_Unresponsive(), ScriptedResponder(matcher), EngineKind.LLM)
    context = LLMContext(
        messages=[{"role": "user", "content": "The birch canoe slid on the smooth planks."}]
    )
    down, _ = await run_test(
        switcher,
        frames_to_send=[LLMContextFrame(context), SleepFrame(0.5)],
        expected_down_frames=[LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame],
    )
    assert down[1].text == "You mentioned a boat on the water."
    assert breaker.state is BreakerState.OPEN


async def test_a_hung_tts_hands_the_unspoken_text_to_the_local_tts() -> None:
    switcher, breaker = _switcher(_Unresponsive(), _Echo(), EngineKind.TTS)
    down, _ = await run_test(
        switcher,
        frames_to_send=[
            LLMTextFrame("Hello"),
            LLMTextFrame(" there. "),
            LLMTextFrame("Bye."),
            SleepFrame(0.5),
        ],
        expected_down_frames=[TTSSpeakFrame],
    )
    assert down[0].text == "Hello there. Bye."
    assert breaker.state is BreakerState.OPEN


def test_breaker_opens_after_consecutive_failures_and_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker("p", failure_threshold=2, reset_secs=10, clock=lambda: now[0])
    breaker.record_failure("x")
    assert breaker.allow() and breaker.state is BreakerState.CLOSED
    breaker.record_failure("y")
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow() and not breaker.allow()  # half-open: exactly one trial call
    breaker.record_failure("trial failed")
    assert breaker.state is BreakerState.OPEN
    now[0] = 20.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker("p", failure_threshold=2, reset_secs=10)
    breaker.record_failure("x")
    breaker.record_success()
    breaker.record_failure("y")
    assert breaker.state is BreakerState.CLOSED
