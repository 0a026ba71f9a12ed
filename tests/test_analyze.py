"""The recording analyzer on dual-channel recordings built here with known gaps."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from switchboard.analysis.recording import DetectorParams, analyze_channels, analyze_recording
from switchboard.audio import read_wav, write_wav
from switchboard.loadtest.commands import add_commands
from switchboard.speech_end import speech_bounds

ENERGY = DetectorParams(detector="energy")  # synthetic tones are not speech to a VAD
TOLERANCE_MS = 20


def voiced(seconds: float, rate: int, dbfs: float = -20.0, f0: float = 140.0) -> np.ndarray:
    """A speech-like burst with hard edges: harmonics of f0, syllable-rate loudness changes."""
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6) if f0 * k < rate / 2)
    envelope = 0.65 + 0.35 * np.sin(2 * np.pi * 4 * t)
    x = wave * envelope
    x *= 10 ** (dbfs / 20) / np.sqrt(np.mean(x**2))
    return (x * 32767).astype(np.int16)


def noise(seconds: float, rate: int, dbfs: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * rate)) * 10 ** (dbfs / 20) * 32767).astype(np.int16)


def place(channel: np.ndarray, burst: np.ndarray, at_s: float, rate: int) -> None:
    i = int(round(at_s * rate))
    mixed = channel[i : i + len(burst)].astype(np.int32) + burst
    channel[i : i + len(burst)] = np.clip(mixed, -32768, 32767)


def conversation(rate: int, gaps_ms: list[int], caller_noise_dbfs: float | None = -50.0):
    """Caller and agent channels taking turns; returns them and the true (caller end, gap) pairs."""
    total = 2.0 + len(gaps_ms) * 4.5
    caller = (
        noise(total, rate, caller_noise_dbfs)
        if caller_noise_dbfs
        else np.zeros(int(total * rate), np.int16)
    )
    agent = np.zeros(int(total * rate), np.int16)
    truth, t = [], 0.8
    for i, gap in enumerate(gaps_ms):
        speak = 1.2 + 0.3 * (i % 3)
        place(caller, voiced(speak, rate, f0=180), t, rate)
        end = t + speak
        place(agent, voiced(1.5, rate, f0=120), end + gap / 1000, rate)
        truth.append((end, gap))
        t = end + gap / 1000 + 1.5 + 0.9
    return caller, agent, truth


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_finds_known_gaps_to_within_20_ms_at_any_rate(tmp_path: Path, rate: int) -> None:
    caller, agent, truth = conversation(rate, [180, 420, 650, 1300])
    path = tmp_path / "call.wav"
    write_wav(path, np.stack([caller, agent], axis=1), rate)
    analysis = analyze_recording(path, params=ENERGY)
    assert len(analysis.gaps) == len(truth)
    for gap, (end, expected) in zip(analysis.gaps, truth, strict=True):
        assert abs(gap.caller_end_s - end) * 1000 <= TOLERANCE_MS
        assert gap.gap_ms is not None and abs(gap.gap_ms - expected) <= TOLERANCE_MS
    assert analysis.caller.noise_floor_dbfs == pytest.approx(-50, abs=3)
    assert analysis.sample_rate == rate and not analysis.overlaps


def test_caller_channel_can_be_the_right_one(tmp_path: Path) -> None:
    caller, agent, truth = conversation(8000, [300, 900])
    path = tmp_path / "twilio.wav"
    write_wav(path, np.stack([agent, caller], axis=1), 8000)
    analysis = analyze_recording(path, caller_channel=1, params=ENERGY)
    assert (analysis.caller_channel, analysis.agent_channel) == (1, 0)
    assert [round(g.gap_ms or 0, -1) for g in analysis.gaps] == [300, 900]


def test_silent_agent_channel_leaves_every_turn_unanswered() -> None:
    caller, agent, truth = conversation(8000, [400, 400])
    analysis = analyze_channels(caller, np.zeros_like(agent), 8000, ENERGY)
    assert len(analysis.gaps) == 2 and all(g.gap_ms is None for g in analysis.gaps)
    assert analysis.agent_segments == [] and analysis.talk.agent == 0
    assert analysis.latency_summary()["n"] == 0


def test_all_silent_recording_has_no_speech() -> None:
    silence = np.zeros(8000 * 5, np.int16)
    analysis = analyze_channels(silence, silence.copy(), 8000)
    assert analysis.caller_segments == [] and analysis.agent_segments == [] and analysis.gaps == []
    assert analysis.talk.silence == 1.0


def test_noise_alone_is_not_speech() -> None:
    line = noise(6.0, 8000, -35.0)
    analysis = analyze_channels(line, np.zeros_like(line), 8000, ENERGY)
    assert analysis.caller_segments == []


def test_clipped_caller_channel_still_gives_the_gaps() -> None:
    caller, agent, truth = conversation(16000, [250, 800], caller_noise_dbfs=-60.0)
    overdriven = np.clip(caller.astype(np.int32) * 30, -32768, 32767).astype(np.int16)
    analysis = analyze_channels(overdriven, agent, 16000, ENERGY)
    assert analysis.caller.clipped_fraction > 0.05
    assert [g.gap_ms for g in analysis.gaps] == pytest.approx(
        [t[1] for t in truth], abs=TOLERANCE_MS
    )


def test_barge_in_is_an_overlap_started_by_the_caller() -> None:
    rate = 8000
    caller, agent = np.zeros(rate * 10, np.int16), np.zeros(rate * 10, np.int16)
    place(agent, voiced(3.0, rate), 0.5, rate)  # the agent is talking from 0.5 to 3.5 s
    place(caller, voiced(1.5, rate, f0=200), 2.9, rate)  # caller barges in at 2.9 s, says 1.5 s
    place(agent, voiced(1.0, rate), 4.4 + 0.45, rate)  # reply 450 ms after the caller ends
    analysis = analyze_channels(caller, agent, rate, ENERGY)
    (overlap,) = analysis.overlaps
    assert overlap.barge_in and overlap.start_s == pytest.approx(2.9, abs=0.02)
    assert overlap.agent_stopped_ms == pytest.approx(600, abs=TOLERANCE_MS)
    (gap,) = analysis.gaps
    assert gap.gap_ms == pytest.approx(450, abs=TOLERANCE_MS)


def test_real_speech_with_pauses_inside_replies(speech_clips) -> None:
    """Real clips with clear edges over a hissing caller line; the agent's reply has a sentence
    pause, so it must be grouped into one turn. Truth is the clean clips' bounds by the one
    definition (speech_end)."""
    rate = 16000
    said = [
        read_wav(speech_clips[f].path, rate)
        for f in ("cmu_arctic_aew_a0001_16k.wav", "cmu_arctic_aew_a0002_16k.wav")
    ]
    reply = read_wav(speech_clips["fw_stereo_right_16k.wav"].path, rate)
    rb = speech_bounds(reply, rate, threshold=-40)
    assert rb is not None
    sentence = reply[int(rb.start * rate) : int(rb.end * rate)]
    caller, agent = noise(24.0, rate, -58.0), np.zeros(rate * 24, np.int16)
    truth, t = [], 0.5
    for clip, gap in zip(said, (500, 850), strict=True):
        b = speech_bounds(clip, rate)
        assert b is not None
        place(caller, clip, t, rate)
        end = t + b.end
        place(agent, sentence, end + gap / 1000, rate)
        place(agent, sentence, end + gap / 1000 + len(sentence) / rate + 0.4, rate)
        truth.append(gap)
        t = end + gap / 1000 + 2 * len(sentence) / rate + 1.5
    analysis = analyze_channels(caller, agent, rate)
    assert len(analysis.agent_turns) == 2
    assert [g.gap_ms for g in analysis.gaps] == pytest.approx(truth, abs=TOLERANCE_MS)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="switchboard")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_analyze_command_prints_table_and_writes_json_and_plot(tmp_path: Path, capsys) -> None:
    caller, agent, truth = conversation(8000, [300, 700])
    path = tmp_path / "call.wav"
    write_wav(path, np.stack([caller, agent], axis=1), 8000)
    code = _cli(
        [
            "analyze",
            str(path),
            "--json",
            str(tmp_path / "a.json"),
            "--plot",
            str(tmp_path / "a.png"),
            "--caller-channel",
            "left",
            "--detector",
            "energy",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "gap ms" in out and "reply gap: n=2" in out
    data = json.loads((tmp_path / "a.json").read_text())
    assert len(data["gaps"]) == 2 and data["caller_channel"] == 0
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_command_refuses_a_mono_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "mono.wav"
    sf.write(str(path), np.zeros(8000, np.int16), 8000)
    assert _cli(["analyze", str(path)]) == 2
    assert "dual-channel" in capsys.readouterr().err
