"""End to end with ``media_stage=lean`` (the default, asked for by name here): Twilio calls whose
caller audio never enters the pipeline; and one call on ``graph``, the way still there to choose.

The same calls as the graph's (tests/test_agent_calls.py, tests/test_cloud_engines.py) through a
real server: offline engines (Whisper's transcripts pick the intents, barge-in, line noise, the
recording's caller channel) and the cloud engines against their emulators (Deepgram's
transcripts reach the LLM; Deepgram dying mid-utterance hands the whole utterance to Whisper).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import (
    RECORDS_DIR,
    REPLIES,
    TEST_AGENT,
    Clip,
    Server,
    agent_lines,
    event_names,
    metric,
    start_agent_server,
    stored_call,
    wait_for,
)
from switchboard.agent.intents import normalize
from switchboard.audio import frame_dbfs
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.line_noise import write_line_noises
from switchboard.loadtest.report import CallOutcome, format_summary
from switchboard.records.storage import LocalRecordingStorage
from test_cloud_engines import CANOE, RICE, Emulators, start_emulators, two_turns
from test_emulators import stats

LEAN = {"SWITCHBOARD_MEDIA_STAGE": "lean"}
STAGED = "caller audio through the media stage"  # the worker's log line for a lean call


def answered(result) -> bool:
    return all(t.agent_audio_start_s is not None for t in result.turns)


@pytest.fixture(scope="module")
def lean_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The offline test agent, recording its calls, with the media stage."""
    agent = yaml.safe_load(TEST_AGENT.read_text())
    agent["recording"] = {"enabled": True}  # no disclosure: the greeting is the usual one
    path = tmp_path_factory.mktemp("lean-agent") / "agent.yaml"
    path.write_text(yaml.safe_dump(agent))
    server = start_agent_server(env=LEAN, agent=path)
    yield server
    server.stop()


async def test_whisper_hears_each_turn_and_the_recording_has_the_caller(
    lean_agent: Server, speech_clips: dict[str, Clip]
) -> None:
    script = CallScript(
        turns=[
            CallerTurn(audio=speech_clips["osr_us_0010_s01_8k.wav"].path),  # "...birch canoe..."
            CallerTurn(audio=speech_clips["osr_us_0010_s05_8k.wav"].path),  # "Rice is often served..."
            CallerTurn(audio=speech_clips["pocketsphinx_cards_003_16k.wav"].path),  # "seven of clubs"
            CallerTurn(audio=speech_clips["fw_stereo_right_16k.wav"].path, hangup_expected=True),
        ]
    )
    result = await run_call(lean_agent.base_url, script, transcribe=False)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    stored = await stored_call(result.call_sid)
    assert agent_lines(stored)[1:] == [REPLIES[i] for i in ("boats", "food", "cards", "goodbye")]
    assert len(stored.turns) == 4 and all(t.bot_started_ms for t in stored.turns), stored.turns
    assert STAGED in lean_agent.log()

    # The caller's channel (left) holds the four utterances: the stage recorded what it heard.
    assert stored.recording is not None
    flac = LocalRecordingStorage(RECORDS_DIR / "recordings").get(stored.recording.key)
    assert flac is not None
    stereo, rate = sf.read(io.BytesIO(flac), dtype="int16", always_2d=True)
    caller_speech_s = float(np.sum(frame_dbfs(stereo[:, 0], rate) > -40)) * 0.01
    spoken_s = sum(sf.info(str(speech_clips[n].path)).duration for n in (
        "osr_us_0010_s01_8k.wav", "osr_us_0010_s05_8k.wav",
        "pocketsphinx_cards_003_16k.wav", "fw_stereo_right_16k.wav",
    ))
    assert 0.4 * spoken_s < caller_speech_s <= spoken_s + 1, (caller_speech_s, spoken_s)


async def test_a_call_on_the_graph_stage_pushes_caller_audio_through_the_pipeline(
    speech_clips: dict[str, Clip],
) -> None:
    server = start_agent_server(env={"SWITCHBOARD_MEDIA_STAGE": "graph"})
    try:
        script = CallScript(
            turns=[
                CallerTurn(audio=speech_clips["osr_us_0010_s01_8k.wav"].path),  # "...birch canoe..."
                CallerTurn(audio=speech_clips["osr_us_0010_s05_8k.wav"].path),  # "Rice is often served..."
            ]
        )
        result = await run_call(server.base_url, script, transcribe=False)
        assert answered(result), format_summary(result)
        stored = await stored_call(result.call_sid)
        assert agent_lines(stored)[1:3] == [REPLIES["boats"], REPLIES["food"]], stored.transcript
        assert STAGED not in server.log()
    finally:
        server.stop()


async def test_barge_in_stops_the_agent(lean_agent: Server, speech_clips: dict[str, Clip]) -> None:
    script = CallScript(
        turns=[CallerTurn(audio=speech_clips["osr_us_0010_s04_8k.wav"].path, barge_in_after_ms=800)]
    )
    result = await run_call(lean_agent.base_url, script, transcribe=False)
    summary = format_summary(result)
    turn = result.turns[0]
    assert turn.agent_talking_at_barge_in and turn.clear_received and turn.barge_in_ok, summary
    assert turn.agent_stopped_ms is not None and turn.agent_stopped_ms < 1000, summary
    assert turn.agent_audio_start_s is not None, summary
    stored = await stored_call(result.call_sid)
    assert "interrupted" in event_names(stored), stored.events
    assert agent_lines(stored)[1:] == [REPLIES["food"]], stored.transcript


async def test_a_cough_alone_does_not_interrupt_the_agent(lean_agent: Server, tmp_path: Path) -> None:
    clip = write_line_noises(tmp_path)["cough_-22dBFS"]
    script = CallScript(turns=[CallerTurn(audio=clip, barge_in_after_ms=600)], reply_timeout_ms=2000)
    result = await run_call(lean_agent.base_url, script, transcribe=False)
    summary = format_summary(result)
    assert result.clear_times_s == [], summary
    assert result.greeting is not None and (result.greeting.duration_s or 0) > 2.5, summary
    assert "interrupted" not in event_names(await stored_call(result.call_sid))


@pytest.fixture(scope="module")
def transcripts(tmp_path_factory: pytest.TempPathFactory, speech_clips: dict[str, Clip]) -> Path:
    path = tmp_path_factory.mktemp("lean-scenario") / "transcripts.txt"
    path.write_text(f"{speech_clips[CANOE].transcript}\n{speech_clips[RICE].transcript}\n")
    return path


@pytest.fixture(scope="module")
def lean_cloud(transcripts: Path) -> Iterator[tuple[Server, Emulators]]:
    """Deepgram + ElevenLabs + OpenAI, emulated, with the media stage (emulators of its own: a
    test kills Deepgram)."""
    emulators = start_emulators(transcripts)
    try:
        server = start_agent_server(env={**emulators.env(), **LEAN})
        yield server, emulators
        server.stop()
    finally:
        emulators.stop()


async def test_deepgrams_transcripts_reach_the_llm(
    lean_cloud: tuple[Server, Emulators], speech_clips: dict[str, Clip]
) -> None:
    server, emulators = lean_cloud
    result = await run_call(server.base_url, two_turns(speech_clips), transcribe=False)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED and answered(result), summary
    requests = [r for r in stats(emulators.llm)["items"] if r["api"] == "openai"][-2:]
    assert requests[0]["messages"][-1] == {"role": "user", "content": speech_clips[CANOE].transcript}
    assert requests[1]["messages"][-1] == {"role": "user", "content": speech_clips[RICE].transcript}
    assert metric(server.base_url, "provider_fallbacks_total", provider="deepgram") == 0
    assert STAGED in server.log()


async def test_an_utterance_deepgram_dies_in_is_heard_whole_by_whisper(
    lean_cloud: tuple[Server, Emulators], speech_clips: dict[str, Clip]
) -> None:
    # The module's last test on the emulators: it kills Deepgram.
    server, emulators = lean_cloud
    heard_before = len(stats(emulators.deepgram)["items"])
    call = asyncio.create_task(
        run_call(server.base_url, CallScript(turns=[CallerTurn(audio=speech_clips[CANOE].path)]), transcribe=False)
    )
    await asyncio.to_thread(
        wait_for, lambda: len(stats(emulators.deepgram)["items"]) > heard_before, 30, 0.02,
        "caller speech at Deepgram",
    )
    await asyncio.sleep(1.2)  # "the birch canoe" is in the first 0.9 s
    emulators.deepgram.process.kill()
    emulators.deepgram.process.wait()
    result = await call
    assert result.outcome == CallOutcome.COMPLETED and answered(result), format_summary(result)
    asked = [r for r in stats(emulators.llm)["items"] if r["api"] == "openai"][-1]["messages"][-1]
    heard = normalize(asked["content"])
    assert "birch" in heard or "canoe" in heard, asked
    assert metric(server.base_url, "provider_fallbacks_total", provider="deepgram") == 1
