"""Recordings: both sides laid out on one clock, as a stereo FLAC the analyzer can read; and
storage on local disk and on a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import free_port
from switchboard.analysis.recording import DetectorParams, analyze_channels
from switchboard.records.recording import RECORDING_RATE, DualChannelRecorder
from switchboard.records.storage import LocalRecordingStorage, S3RecordingStorage, recording_storage

TONES = DetectorParams(detector="energy")  # Silero would rightly say a tone is not speech


def tone(secs: float, rate: int, freq: float = 440.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(secs * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def feed(
    recorder: DualChannelRecorder,
    side: str,
    audio: np.ndarray,
    rate: int,
    t0: float,
    chunk_ms: int = 20,
) -> None:
    """Chunks as a transport delivers them: one every ``chunk_ms``, stamped with their time."""
    n = rate * chunk_ms // 1000
    add = recorder.caller if side == "caller" else recorder.agent
    for i in range(0, audio.size, n):
        add(audio[i : i + n].tobytes(), rate, t0 + i / rate)


def test_each_side_lands_on_its_channel_at_the_time_it_was_heard() -> None:
    recorder = DualChannelRecorder()
    # Four seconds of caller audio (8 kHz telephony upsampled to 16 kHz by the pipeline) ...
    caller = np.zeros(4 * 16000, dtype=np.int16)
    caller[16000:32000] = tone(1.0, 16000)  # the caller speaks from 1.0 to 2.0 s
    feed(recorder, "caller", caller, 16000, t0=100.0)
    # ... and the agent answers at 2.5 s for 1 s, at 8 kHz, then again at 3.6 s.
    feed(recorder, "agent", tone(0.8, 8000, 300), 8000, t0=102.5)
    feed(recorder, "agent", tone(0.3, 8000, 300), 8000, t0=103.6)

    flac, duration = recorder.encode()
    data, rate = sf.read(io.BytesIO(flac), dtype="int16", always_2d=True)
    assert rate == RECORDING_RATE and data.shape[1] == 2
    assert sf.info(io.BytesIO(flac)).format == "FLAC"
    assert duration == pytest.approx(4.0, abs=0.05)
    analysis = analyze_channels(data[:, 0], data[:, 1], rate, TONES)
    [turn] = analysis.caller_turns
    assert turn.start_s == pytest.approx(1.0, abs=0.05) and turn.end_s == pytest.approx(
        2.0, abs=0.05
    )
    assert [round(s.start_s, 1) for s in analysis.agent_segments] == [2.5, 3.6]
    [gap] = analysis.gaps
    assert gap.gap_ms == pytest.approx(500, abs=50)
    assert len(flac) < data.size * 2 / 2  # compressed to under half of the raw PCM


def test_agent_audio_sent_faster_than_real_time_is_laid_end_to_end() -> None:
    recorder = DualChannelRecorder()
    feed(recorder, "caller", np.zeros(3 * 16000, dtype=np.int16), 16000, t0=0.0)
    burst = tone(1.0, 24000, 300)
    n = 480  # 20 ms at 24 kHz, all pushed within the same 10 ms
    for i in range(0, burst.size, n):
        recorder.agent(burst[i : i + n].tobytes(), 24000, 1.0 + i / burst.size * 0.01)
    data, rate = sf.read(io.BytesIO(recorder.encode()[0]), dtype="int16", always_2d=True)
    [segment] = analyze_channels(data[:, 0], data[:, 1], rate, TONES).agent_segments
    assert segment.start_s == pytest.approx(1.0, abs=0.03) and segment.end_s == pytest.approx(
        2.0, abs=0.05
    )


def test_local_storage_round_trips_and_refuses_keys_that_leave_its_directory(tmp_path) -> None:
    storage = recording_storage(str(tmp_path))
    assert isinstance(storage, LocalRecordingStorage)
    storage.put("2026/12/01/call-1.flac", b"fLaC1")
    assert storage.get("2026/12/01/call-1.flac") == b"fLaC1"
    storage.delete("2026/12/01/call-1.flac")
    storage.delete("2026/12/01/call-1.flac")
    assert storage.get("2026/12/01/call-1.flac") is None
    for bad in ("../escape.flac", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError):
            storage.put(bad, b"x")


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server as its own process on a loopback port."""
    pytest.importorskip("moto.server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise TimeoutError("moto server did not start")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


def test_s3_storage_round_trips_through_a_real_s3_server(s3_endpoint: str, aws_env: None) -> None:
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="calls")
    storage = recording_storage("s3://calls/switchboard/recordings", s3_endpoint_url=s3_endpoint)
    assert isinstance(storage, S3RecordingStorage)
    storage.put("2026/12/01/call-1.flac", b"fLaC-s3")
    assert storage.get("2026/12/01/call-1.flac") == b"fLaC-s3"
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="calls")
    assert [o["Key"] for o in listed["Contents"]] == [
        "switchboard/recordings/2026/12/01/call-1.flac"
    ]
    storage.delete("2026/12/01/call-1.flac")
    assert storage.get("2026/12/01/call-1.flac") is None
    assert "AWS_SECRET_ACCESS_KEY" in os.environ  # credentials come from the standard variables
