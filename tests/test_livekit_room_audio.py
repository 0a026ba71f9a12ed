"""The agent hears a room's phone as its pipeline takes audio: 16 kHz mono in ``input_frame_ms``
frames (20 ms by default), from LiveKit's native SDK (a real LiveKit server on loopback; the
agent's transport in this process)."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from livekit import api as livekit_api
from livekit import rtc
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from conftest import LOG_DIR, free_port, start_redis
from livekit_stack import require_binaries
from switchboard.settings import Settings
from switchboard.telephony import livekit_local as local
from switchboard.telephony.livekit import LiveKitRoomAdapter

PHONE_RATE = 48000  # what a WebRTC leg carries: the SDK's default, resampled in Python before
TONE_HZ = 440
ROOM = "call-room-audio"


@pytest.fixture(scope="module")
def livekit() -> Iterator[local.LocalLiveKit]:
    require_binaries()
    data_dir = Path(tempfile.mkdtemp(prefix="sb-room-audio-"))
    redis = start_redis(data_dir)
    ports = local.loopback_ports()
    livekit = local.prepare(
        data_dir, ports, local.deployment_keys(data_dir / "keys"), redis.url,
        f"http://127.0.0.1:{free_port()}/webhooks/livekit",  # nobody listens: not this test's part
    )  # fmt: skip
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"livekit-server-{ports.http}.log", "w") as log:
        server = subprocess.Popen(livekit.server_argv(), stdout=log, stderr=subprocess.STDOUT)
    try:
        local.wait_until(lambda: local.server_ready(ports), 30, "livekit-server", alive=lambda: server.poll() is None)
        yield livekit
    finally:
        server.terminate()
        server.wait(timeout=15)
        redis.stop()


class Heard(FrameProcessor):
    """The caller's audio frames as they leave the input transport."""

    def __init__(self, enough: int):
        super().__init__()
        self.frames: list[InputAudioRawFrame] = []
        self._enough = enough
        self.done = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.frames.append(frame)
            if len(self.frames) >= self._enough:
                self.done.set()
        await self.push_frame(frame, direction)


async def phone_playing_a_tone(livekit: local.LocalLiveKit, stop: asyncio.Event) -> None:
    """A participant publishing a 440 Hz tone at 48 kHz in 10 ms frames, as a browser would."""
    token = (
        livekit_api.AccessToken(livekit.keys.api_key, livekit.keys.api_secret)
        .with_identity("phone")
        .with_grants(livekit_api.VideoGrants(room_join=True, room=ROOM))
        .to_jwt()
    )
    room = rtc.Room()
    await room.connect(livekit.ports.url, token)
    try:
        source = rtc.AudioSource(PHONE_RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        await room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        samples = PHONE_RATE // 100
        n = 0
        while not stop.is_set():
            t = (np.arange(samples) + n * samples) / PHONE_RATE
            tone = (8000 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
            await source.capture_frame(rtc.AudioFrame(tone.tobytes(), PHONE_RATE, 1, samples))
            n += 1
    finally:
        await room.disconnect()


def dominant_hz(audio: bytes, rate: int) -> float:
    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("frame_ms", [20, 40])
async def test_the_agent_hears_the_phone_at_16_khz_mono_in_input_frame_ms_frames(
    livekit: local.LocalLiveKit, frame_ms: int
) -> None:
    settings = Settings(**livekit.env(), input_frame_ms=frame_ms)
    transport = LiveKitRoomAdapter(settings, ROOM, "room-audio").transport()
    heard = Heard(enough=1000 // frame_ms)  # a second of audio
    worker = PipelineWorker(
        Pipeline([transport.input(), heard]),
        params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=16000),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    stop = asyncio.Event()
    agent = asyncio.create_task(runner.run())
    phone = asyncio.create_task(phone_playing_a_tone(livekit, stop))
    try:
        await asyncio.wait_for(heard.done.wait(), 30)
    finally:
        stop.set()
        await worker.cancel()
        await asyncio.wait_for(asyncio.gather(agent, phone), 30)

    frames = heard.frames[-(800 // frame_ms) :]  # past the first frames of the Opus decoder
    frame_bytes = 16000 * frame_ms // 1000 * 2
    assert {(f.sample_rate, f.num_channels, len(f.audio)) for f in frames} == {(16000, 1, frame_bytes)}
    assert abs(dominant_hz(b"".join(f.audio for f in frames), 16000) - TONE_HZ) < 5
