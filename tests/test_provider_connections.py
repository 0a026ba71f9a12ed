"""Provider connections: one client per process (not per call), and what goes up Deepgram's stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pipecat.services.deepgram.stt as pipecat_deepgram
import pytest
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
from pipecat.tests.utils import SleepFrame, run_test

from conftest import Clip, Server
from switchboard.audio import TelephonyUpsampler, read_wav, ulaw_decode, ulaw_encode
from switchboard.engines.deepgram import build_deepgram_stt
from switchboard.engines.elevenlabs import build_elevenlabs_tts
from switchboard.engines.line_audio import LineAudioFrame
from switchboard.engines.llm import shared_openai_client
from switchboard.engines.shared_clients import close_shared_clients, tls_context
from switchboard.settings import Settings
from test_emulators import start_emulator, stats

CANOE = "osr_us_0010_s01_8k.wav"
LINE_FRAME = 160  # 20 ms of 8 kHz µ-law, as Twilio sends it


def _settings(**kwargs) -> Settings:
    return Settings(
        **{"DEEPGRAM_API_KEY": "dg-test", "ELEVENLABS_API_KEY": "el-test", "OPENAI_API_KEY": "sk-test"},
        **kwargs,
    )


class _CountingClient(httpx.AsyncClient):
    built = 0

    def __init__(self, *args, **kwargs):
        type(self).built += 1
        super().__init__(*args, **kwargs)


async def test_calls_share_one_deepgram_client_whose_http_pool_closes_at_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every HTTP pool built from here on is counted: Pipecat's service would build one per call.
    monkeypatch.setattr(httpx, "AsyncClient", _CountingClient)
    settings = _settings(deepgram_url="ws://127.0.0.1:9/one-process")
    first, second = build_deepgram_stt(settings), build_deepgram_stt(settings)
    assert first._client is second._client
    assert _CountingClient.built == 1
    assert pipecat_deepgram.AsyncDeepgramClient.__module__.startswith("deepgram")  # put back
    pool = first._client._client_wrapper.httpx_client.httpx_client
    await close_shared_clients()
    assert pool.is_closed
    # Closed is forgotten: the next call builds the process a new one.
    assert build_deepgram_stt(settings)._client is not first._client


async def test_openai_calls_on_one_loop_share_a_client_closed_at_shutdown() -> None:
    settings = _settings(llm_base_url="http://127.0.0.1:9/v1")
    client = shared_openai_client(settings, "sk-test")
    assert shared_openai_client(settings, "sk-test") is client
    assert shared_openai_client(settings, "sk-other") is not client
    await close_shared_clients()
    assert client._client.is_closed


async def test_elevenlabs_connects_over_wss_with_the_process_tls_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict = {}

    async def connect(self, uri: str, **kwargs):
        seen.update(kwargs, uri=uri)

    monkeypatch.setattr(ElevenLabsTTSService, "_websocket_connect", connect)
    tts = build_elevenlabs_tts(_settings(elevenlabs_url="wss://api.elevenlabs.io"))
    await tts._websocket_connect("wss://api.elevenlabs.io/v1/text-to-speech/x/multi-stream-input")
    assert seen["ssl"] is tls_context()
    seen.clear()
    await tts._websocket_connect("ws://127.0.0.1:9/v1/text-to-speech/x/multi-stream-input")
    assert "ssl" not in seen  # plain ws:// (an emulator) has no TLS to set up


def test_line_audio_vouches_for_its_ulaw_only_while_its_audio_is_unchanged() -> None:
    frame = LineAudioFrame(audio=bytes(640), sample_rate=16000, num_channels=1, ulaw=b"\xff" * 160)
    assert frame.line_ulaw() == b"\xff" * 160
    frame.audio = bytes(640)  # a filter wrote its output back
    assert frame.line_ulaw() is None


@pytest.fixture(scope="module")
def deepgram(tmp_path_factory: pytest.TempPathFactory, speech_clips: dict[str, Clip]) -> Iterator[Server]:
    transcripts = tmp_path_factory.mktemp("dg-wire") / "transcripts.txt"
    transcripts.write_text(speech_clips[CANOE].transcript + "\n")
    server = start_emulator("deepgram", "--transcripts", str(transcripts))
    yield server
    server.stop()


def _utterance(frames: list[Frame]) -> list[Frame]:
    """The frames the STT sees for one utterance: VAD start, the audio, VAD stop, time for the final."""
    return [VADUserStartedSpeakingFrame(), *frames, VADUserStoppedSpeakingFrame(), SleepFrame(1.5)]


def _line_frames(path: Path) -> tuple[list[Frame], bytes]:
    """A phone line's frames as the Twilio serializer makes them, and the µ-law they came from."""
    samples = np.concatenate([read_wav(path, 8000), np.zeros(2400)]).astype(np.int16)  # + 300 ms
    ulaw = ulaw_encode(samples)
    ulaw = ulaw[: len(ulaw) // LINE_FRAME * LINE_FRAME]
    upsampler = TelephonyUpsampler()
    frames: list[Frame] = []
    for i in range(0, len(ulaw), LINE_FRAME):
        chunk = ulaw[i : i + LINE_FRAME]
        pcm = upsampler.process(ulaw_decode(chunk)).tobytes()
        frames.append(LineAudioFrame(audio=pcm, sample_rate=16000, num_channels=1, ulaw=chunk))
    return frames, ulaw


async def _transcribe(settings: Settings, frames: list[Frame], line_rate: int) -> list[Frame]:
    down, _ = await run_test(
        build_deepgram_stt(settings),
        frames_to_send=_utterance(frames),
        pipeline_params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=line_rate),
        start_timeout=10,
    )
    await close_shared_clients()
    return [f for f in down if isinstance(f, TranscriptionFrame)]


async def test_a_phone_line_streams_its_own_mulaw_to_deepgram_in_80_ms_messages(
    deepgram: Server, speech_clips: dict[str, Clip]
) -> None:
    frames, ulaw = _line_frames(speech_clips[CANOE].path)
    settings = _settings(deepgram_url=deepgram.base_url.replace("http://", "ws://"))
    finals = await _transcribe(settings, frames, line_rate=8000)
    assert [f.text for f in finals] == [speech_clips[CANOE].transcript]
    stream = stats(deepgram)["streams"][-1]
    # The line's bytes as they came, 4 frames a message; the rest went up before Finalize.
    assert (stream["encoding"], stream["sample_rate"]) == ("mulaw", 8000)
    assert stream["bytes"] == len(ulaw)
    assert stream["messages"] == -(-len(frames) // 4)


async def test_a_wideband_call_streams_its_pcm_to_deepgram_in_80_ms_messages(
    deepgram: Server, speech_clips: dict[str, Clip]
) -> None:
    pcm = read_wav(speech_clips[CANOE].path, 16000).astype("<i2").tobytes() + bytes(9600)
    frames: list[Frame] = [
        InputAudioRawFrame(pcm[i : i + 640], 16000, 1) for i in range(0, len(pcm) // 640 * 640, 640)
    ]
    settings = _settings(deepgram_url=deepgram.base_url.replace("http://", "ws://"))
    finals = await _transcribe(settings, frames, line_rate=16000)
    assert [f.text for f in finals] == [speech_clips[CANOE].transcript]
    stream = stats(deepgram)["streams"][-1]
    assert (stream["encoding"], stream["sample_rate"]) == ("linear16", 16000)
    assert stream["bytes"] == len(frames) * 640
    assert stream["messages"] == -(-len(frames) // 4)
