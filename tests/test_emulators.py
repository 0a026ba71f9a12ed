"""The provider emulators on loopback: protocol behaviour, pacing, and the circuit breaker's rules."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import LOG_DIR, Clip, Server, free_port, wait_healthy
from switchboard.audio import read_wav
from switchboard.emulators.profiles import load_profile


def start_emulator(provider: str, *args: str) -> Server:
    """``python -m switchboard.emulators <provider>`` (what ``switchboard emulate`` runs) on a free port."""
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"emulator-{provider}-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "switchboard.emulators", provider, "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_healthy(server.base_url, process, limit_secs=30)
    except Exception:
        server.stop()
        raise
    return server


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ws_url(server: Server) -> str:
    return server.base_url.replace("http://", "ws://")


def stats(server: Server) -> dict:
    return httpx.get(f"{server.base_url}/stats", timeout=5).json()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dg") / "transcripts.txt"
    path.write_text(
        "The birch canoe slid on the smooth planks.\nRice is often served in round bowls.\n"
    )
    return path


@pytest.fixture(scope="module")
def deepgram(scenario: Path) -> Iterator[Server]:
    server = start_emulator("deepgram", "--transcripts", str(scenario))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def elevenlabs() -> Iterator[Server]:
    server = start_emulator("elevenlabs")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    rules = tmp_path_factory.mktemp("llm") / "rules.yaml"
    rules.write_text(
        "- match: canoe\n  reply: A canoe is a fine boat. Anything else?\n"
        "- {match: visit, reply: Let me check., tool: next_visit, arguments: {patient: '7'},"
        " after_tool: 'It is {result}'}\n"
    )
    server = start_emulator(
        "llm", "--rules", str(rules), "--set", "ttft_ms=300", "--set", "tokens_per_sec=50"
    )
    yield server
    server.stop()


def _pcm16(clip: Clip) -> bytes:
    return read_wav(clip.path, 16000).astype("<i2").tobytes()


async def _listen(
    url: str, audio: bytes, then: list[dict], *, auth: str = "Token dg-test-key"
) -> list[dict]:
    """Send audio (faster than real time: the emulator keeps time by the audio), then control messages."""
    messages: list[dict] = []
    async with connect(url, additional_headers={"Authorization": auth}) as ws:
        for i in range(0, len(audio), 640):
            await ws.send(audio[i : i + 640])
        for control in then:
            await ws.send(json.dumps(control))
        try:
            async with asyncio.timeout(10):
                async for raw in ws:
                    messages.append(json.loads(raw))
        except ConnectionClosed:
            pass
    return messages


DG_QUERY = (
    "/v1/listen?model=nova-2&encoding=linear16&sample_rate=16000&channels=1&interim_results=true"
    "&endpointing=300&utterance_end_ms=1000&vad_events=true&punctuate=true"
)


async def test_deepgram_emulator_transcribes_each_utterance_in_scenario_order(
    deepgram: Server, speech_clips: dict[str, Clip]
) -> None:
    silence = bytes(2 * 16000 * 3 // 2)  # 1.5 s: past endpointing and utterance_end_ms
    audio = silence + _pcm16(speech_clips["osr_us_0010_s01_8k.wav"]) + silence
    audio += _pcm16(speech_clips["osr_us_0010_s05_8k.wav"]) + silence
    messages = await _listen(ws_url(deepgram) + DG_QUERY, audio, [{"type": "CloseStream"}])
    kinds = [m["type"] for m in messages]
    finals = [
        m
        for m in messages
        if m["type"] == "Results"
        and m["is_final"]
        and m["channel"]["alternatives"][0]["transcript"]
    ]
    assert [f["channel"]["alternatives"][0]["transcript"] for f in finals] == [
        "The birch canoe slid on the smooth planks.",
        "Rice is often served in round bowls.",
    ]
    assert all(f["speech_final"] for f in finals)
    interims = [m for m in messages if m["type"] == "Results" and not m["is_final"]]
    assert interims and all(m["channel"]["alternatives"][0]["transcript"] for m in interims)
    assert kinds.count("SpeechStarted") == 2 and kinds.count("UtteranceEnd") == 2
    assert kinds[-1] == "Metadata" and messages[-1]["duration"] == pytest.approx(
        len(audio) / 32000, abs=0.05
    )
    # Speech starts where the clip does, not before: the timing comes from the audio.
    assert finals[0]["start"] >= 1.5


async def test_deepgram_emulator_finalize_flushes_and_keepalive_is_silent(
    deepgram: Server, speech_clips: dict[str, Clip]
) -> None:
    # Half a second of silence after the speech: too short for endpointing's 300 ms? No: long enough
    # for nothing but Finalize to be asked for, so endpointing is set high here.
    url = ws_url(deepgram) + DG_QUERY.replace("endpointing=300", "endpointing=5000").replace(
        "utterance_end_ms=1000", "utterance_end_ms=6000"
    )
    audio = _pcm16(speech_clips["osr_us_0010_s01_8k.wav"]) + bytes(16000)
    messages = await _listen(
        url, audio, [{"type": "KeepAlive"}, {"type": "Finalize"}, {"type": "CloseStream"}]
    )
    finals = [m for m in messages if m["type"] == "Results" and m["is_final"]]
    assert finals[0]["from_finalize"] and not finals[0]["speech_final"]
    assert finals[0]["channel"]["alternatives"][0]["transcript"].startswith("The birch canoe")


async def test_deepgram_emulator_hears_speech_after_a_finalize_as_new_words(
    deepgram: Server, speech_clips: dict[str, Clip]
) -> None:
    # The agent took a pause for the end of the turn (Finalize) and the caller went on: what
    # follows is transcribed too, as Deepgram does, not swallowed by the finalized utterance.
    url = ws_url(deepgram) + DG_QUERY.replace("endpointing=300", "endpointing=5000").replace(
        "utterance_end_ms=1000", "utterance_end_ms=6000"
    )
    pause = bytes(2 * 16000 // 5)  # 200 ms: shorter than endpointing
    finalize = json.dumps({"type": "Finalize"})
    finals: list[str] = []
    async with connect(url, additional_headers={"Authorization": "Token dg-test-key"}) as ws:
        for clip in ("osr_us_0010_s01_8k.wav", "osr_us_0010_s05_8k.wav"):
            audio = _pcm16(speech_clips[clip]) + pause
            for i in range(0, len(audio), 640):
                await ws.send(audio[i : i + 640])
            await ws.send(finalize)
            async with asyncio.timeout(10):
                while True:
                    message = json.loads(await ws.recv())
                    if message["type"] == "Results" and message.get("from_finalize"):
                        finals.append(message["channel"]["alternatives"][0]["transcript"])
                        break
    assert finals == [
        "The birch canoe slid on the smooth planks.",
        "Rice is often served in round bowls.",
    ]


async def test_deepgram_emulator_refuses_a_connection_without_a_key(deepgram: Server) -> None:
    with pytest.raises(InvalidStatus):
        async with connect(ws_url(deepgram) + DG_QUERY):
            pass


async def test_deepgram_emulator_refuses_raw_audio_without_its_sample_rate(deepgram: Server) -> None:
    # Raw audio says nothing of its rate: Deepgram requires sample_rate with encoding.
    with pytest.raises(InvalidStatus):
        async with connect(
            ws_url(deepgram) + "/v1/listen?model=nova-2&encoding=mulaw",
            additional_headers={"Authorization": "Token dg-test-key"},
        ):
            pass


async def _synthesize(url: str, text: str) -> tuple[list[dict], float]:
    """One multi-stream-input context, as Pipecat drives it; returns messages and first-audio delay."""
    messages, first_audio = [], None
    async with connect(url, additional_headers={"xi-api-key": "el-test-key"}) as ws:
        await ws.send(
            json.dumps({"text": " ", "context_id": "c1", "voice_settings": {"stability": 0.5}})
        )
        sent = time.monotonic()
        await ws.send(json.dumps({"text": text, "context_id": "c1"}))
        await ws.send(json.dumps({"context_id": "c1", "close_context": True}))
        async with asyncio.timeout(10):
            async for raw in ws:
                msg = json.loads(raw)
                messages.append(msg)
                if msg.get("audio") and first_audio is None:
                    first_audio = time.monotonic() - sent
                if msg.get("isFinal"):
                    break
        await ws.send(json.dumps({"close_socket": True}))
    return messages, first_audio or 0.0


async def test_elevenlabs_emulator_streams_audio_of_the_texts_length_with_alignment(
    elevenlabs: Server,
) -> None:
    text = "Thank you for calling. How can I help? "
    url = (
        ws_url(elevenlabs)
        + "/v1/text-to-speech/voice1/multi-stream-input?model_id=eleven_flash_v2_5&output_format=pcm_8000&auto_mode=true"
    )
    messages, first_audio = await _synthesize(url, text)
    assert messages[-1] == {"isFinal": True, "contextId": "c1"}
    chunks = [m for m in messages if m.get("audio")]
    assert all(m["contextId"] == "c1" for m in chunks)
    audio = b"".join(base64.b64decode(m["audio"]) for m in chunks)
    profile = load_profile("elevenlabs")
    spoken = " " + text  # the context-init's single space is part of the context's text
    assert len(audio) / 16 == pytest.approx(
        len(spoken) * profile.ms_per_char, rel=0.02
    )  # pcm_8000: 16 bytes/ms
    assert "".join(c for m in chunks for c in m["alignment"]["chars"]) == spoken
    samples = np.frombuffer(audio, dtype="<i2")
    assert 500 < np.sqrt(np.mean(samples.astype(np.float32) ** 2)) < 15000  # audible, not clipped
    # Voiced from the first 10 ms (the caller simulator hears above -45 dBFS): the first audio
    # comes when the profile says, with no silence ahead of the voice.
    first_10ms = samples[:80].astype(np.float32)
    assert 20 * np.log10(np.sqrt(np.mean(first_10ms**2)) / 32768) > -45
    assert 0.07 <= first_audio < 0.5


async def test_elevenlabs_emulator_speaks_ulaw_and_refuses_mp3(elevenlabs: Server) -> None:
    base = (
        ws_url(elevenlabs)
        + "/v1/text-to-speech/voice1/multi-stream-input?auto_mode=true&output_format="
    )
    messages, _ = await _synthesize(base + "ulaw_8000", "Hello there. ")
    audio = b"".join(base64.b64decode(m["audio"]) for m in messages if m.get("audio"))
    assert len(audio) / 8 == pytest.approx(
        len(" Hello there. ") * 65, rel=0.05
    )  # µ-law: 8 bytes/ms
    with pytest.raises(InvalidStatus):
        await _synthesize(base + "mp3_44100_128", "Hello. ")


async def test_openai_sdk_streams_a_rule_reply_after_the_profiles_ttft(llm: Server) -> None:
    client = AsyncOpenAI(api_key="sk-test", base_url=f"{llm.base_url}/v1")
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        stream=True,
        stream_options={"include_usage": True},
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "The birch canoe slid."},
        ],
    )
    pieces, first = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.monotonic() - started
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "A canoe is a fine boat. Anything else?"
    assert 0.3 <= first < 1.0
    assert time.monotonic() - started >= 0.3 + (len(pieces) - 1) / 50


async def test_anthropic_sdk_streams_an_echo_reply(llm: Server) -> None:
    client = AsyncAnthropic(api_key="sk-ant-test", base_url=llm.base_url)
    async with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "Go forward ten meters."}],
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == "You said: Go forward ten meters. Is there anything else I can help with?"
    assert stats(llm)["items"][-1]["api"] == "anthropic"


NEXT_VISIT = {
    "name": "next_visit",
    "description": "The patient's next visit",
    "input_schema": {"type": "object", "properties": {"patient": {"type": "string"}}},
}


async def test_anthropic_sdk_streams_a_tool_use_and_answers_its_result(llm: Server) -> None:
    client = AsyncAnthropic(api_key="sk-ant-test", base_url=llm.base_url)
    asked = [{"role": "user", "content": "When is my next visit?"}]
    async with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=asked, tools=[NEXT_VISIT]
    ) as stream:
        kinds = [event.type async for event in stream]
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    text, call = message.content
    assert text.type == "text" and text.text == "Let me check."
    assert (call.type, call.name, call.input) == ("tool_use", "next_visit", {"patient": "7"})
    assert call.id.startswith("toolu_")
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "input_json" in kinds  # the arguments arrived as input_json_delta events

    answered = [
        *asked,
        {"role": "assistant", "content": [c.model_dump() for c in message.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Friday"}],
        },
    ]
    async with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=answered, tools=[NEXT_VISIT]
    ) as stream:
        reply = await stream.get_final_message()
    assert reply.stop_reason == "end_turn"
    assert [c.text for c in reply.content] == ["It is Friday"]


async def test_anthropic_emulator_calls_only_tools_the_request_offers(llm: Server) -> None:
    client = AsyncAnthropic(api_key="sk-ant-test", base_url=llm.base_url)
    async with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "When is my next visit?"}],
    ) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "end_turn"
    assert [c.type for c in message.content] == ["text"]


def test_emulators_cost_almost_no_cpu(elevenlabs: Server) -> None:
    """Ten seconds of speech served costs the emulator well under a tenth of a core-second."""
    before = cpu_seconds(elevenlabs.process.pid)
    text = "This is a fairly long sentence that the emulator has to turn into audio. " * 2
    url = (
        ws_url(elevenlabs)
        + "/v1/text-to-speech/v/multi-stream-input?auto_mode=true&output_format=pcm_16000"
    )
    asyncio.run(_synthesize(url, text))
    assert cpu_seconds(elevenlabs.process.pid) - before < 0.1
