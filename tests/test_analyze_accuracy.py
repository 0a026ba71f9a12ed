"""The recording analyzer against known truths: a fake agent whose delay is known, and noisy
8 kHz recordings built from real speech with known gaps."""

from __future__ import annotations

import argparse
import asyncio
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest

from switchboard.audio import TELEPHONY_RATE as RATE
from switchboard.audio import read_wav, ulaw_decode, ulaw_encode, write_wav
from switchboard.loadtest.analyze import (
    DetectorParams,
    analyze_channels,
    analyze_recording,
    format_analysis,
)
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.commands import add_commands
from switchboard.loadtest.fake_agent import fake_agent_app
from switchboard.loadtest.known_end import FADE_MS, derive, load_manifest
from switchboard.loadtest.line_noise import line_noises
from switchboard.loadtest.report import CallOutcome
from switchboard.loadtest.validation import serve_app as serve

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
# Known-end clips of different speakers and floors. Left out: clips that fall digitally silent
# inside the speech (the fake agent answers those pauses).
FAKE_AGENT_CLIPS = [
    "pocketsphinx_cards_001_16k_known_end.wav",
    "pocketsphinx_cards_003_16k_known_end.wav",  # "clubs": short bursts 170-250 ms after the vowel
    "osr_us_0010_s02_8k_known_end.wav",
    "osr_us_0010_s05_8k_known_end.wav",  # a tail hovering at the threshold
    "cmu_arctic_aew_a0003_16k_known_end.wav",  # "hands": a 20 ms burst 30 ms after the nasal
    "timit_ldc93s1_8k_known_end.wav",
]
DELAYS = [(300, 0), (500, 0), (800, 0), (300, 20), (500, 20), (800, 20)]
FAKE_AGENT_TOLERANCE_MS = 15


async def _fake_agent_calls(
    configs: list[tuple[int, int]], tmp_path: Path
) -> list[tuple[list[float], list[float | None], Path]]:
    """One two-turn call per ``(delay_ms, jitter_ms)``, all at once: for each, the delays the
    agent used, the caller simulator's readings and the recording."""
    clips = {c.path.name: c for c in load_manifest(REPO / "benchmarks" / "clips")}
    with ExitStack() as stack:
        urls = [stack.enter_context(serve(fake_agent_app(d, j, seed=d + j))) for d, j in configs]
        scripts = [
            CallScript(
                turns=[
                    CallerTurn(
                        audio=clips[FAKE_AGENT_CLIPS[(2 * i + k) % 6]].path, pause_before_ms=300
                    )
                    for k in range(2)
                ],
                agent_done_silence_ms=300,  # the agent's reply is one unbroken tone
            )
            for i in range(len(configs))
        ]
        paths = [tmp_path / f"call_{d}_{j}.wav" for d, j in configs]
        results = await asyncio.gather(
            *(
                run_call(u, s, transcribe=False, record_path=p)
                for u, s, p in zip(urls, scripts, paths, strict=True)
            )
        )
        async with httpx.AsyncClient() as client:
            truths = [(await client.get(u + "/turns")).json() for u in urls]
    out = []
    for result, truth, path in zip(results, truths, paths, strict=True):
        assert result.outcome == CallOutcome.COMPLETED, result.reason
        out.append((truth[result.call_sid], [t.voice_to_voice_ms for t in result.turns], path))
    return out


async def test_gaps_in_the_recording_are_the_fake_agents_known_delays(tmp_path: Path) -> None:
    """Three calls at a time (a busy loop would delay the caller, not the analyzer): each
    recording's gaps are the delays the agent used, and what the caller simulator read."""
    calls = await _fake_agent_calls(DELAYS[:3], tmp_path)
    calls += await _fake_agent_calls(DELAYS[3:], tmp_path)
    errors = {}
    for (delay, jitter), (used, simulator, path) in zip(DELAYS, calls, strict=True):
        analysis = analyze_recording(path)
        got = analysis.latencies_ms()
        assert len(got) == len(used) == len(simulator) == 2, (got, used, simulator)
        errors[(delay, jitter)] = [round(g - u, 1) for g, u in zip(got, used, strict=True)]
        for g, read in zip(got, simulator, strict=True):
            assert read is not None and abs(g - read) <= 2, (got, simulator)
        assert analysis.caller.confidence == analysis.agent.confidence == "high"
    print("analyzer - fake agent delay, ms:", errors)
    for case, err in errors.items():
        assert max(map(abs, err)) <= FAKE_AGENT_TOLERANCE_MS, (case, err)


# Noisy 8 kHz recordings. Caller: OSR sentences (their own background is -45 dBFS) cut at their
# known end, then put on a line whose noise continues through the call, scaled so the line's
# floor is -45 to -60 dBFS; breaths (band-limited noise bursts) and a cough after some phrases;
# trailing fricatives as they are. Agent: known-end clips whose speech starts exactly ``gap`` after the
# caller's speech ended, on a digitally silent line (TTS on a Twilio recording).
CALLER = [f"osr_us_0010_s0{i}_8k.wav" for i in range(1, 6)]
AGENT = [
    "cmu_arctic_aew_a0001_16k.wav",
    "cmu_arctic_aew_a0002_16k.wav",
    "timit_ldc93s1_8k.wav",
    "cmu_arctic_aew_a0003_16k.wav",
    "ljspeech_LJ050-0131_22k.wav",
]
GAPS_MS = [430, 780, 1250, 300, 950]
# What follows each phrase, 200 ms after it: a breath, nothing, a cough, a breath, nothing.
AFTER = ["breath", None, "cough", "breath", None]
NOISY_TOLERANCE_MS = 20


def band_noise(
    n: int, dbfs: float, lo_hz: float, hi_hz: float, rng: np.random.Generator
) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < lo_hz) | (freqs > hi_hz)] = 0
    x = np.fft.irfft(spectrum, n)
    return x * 10 ** (dbfs / 20) / np.sqrt(np.mean(x**2)) * 32768


def breath(rng: np.random.Generator, ms: int = 300, dbfs: float = -38.0) -> np.ndarray:
    """An inhalation: 400-2500 Hz noise under a smooth swell, no voicing."""
    n = RATE * ms // 1000
    envelope = np.sin(np.pi * np.arange(n) / n) ** 1.5
    return band_noise(n, dbfs, 400, 2500, rng) * envelope / np.sqrt(np.mean(envelope**2))


def noisy_call(
    noise_dbfs: float, gain_db: float, after: list[str | None], seed: int = 1
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """µ-law caller and agent channels and the true caller speech ends (s)."""
    rng = np.random.default_rng(seed)
    gain = 10 ** (gain_db / 20)
    caller, agent = np.zeros(90 * RATE), np.zeros(90 * RATE)
    ends, t = [], 0.5
    cough = line_noises()["cough_-22dBFS"].astype(float)
    for said, reply, gap, burst in zip(CALLER, AGENT, GAPS_MS, after, strict=True):
        clip, _, clip_end = derive(read_wav(SPEECH / said, RATE))
        at = round(t * RATE)
        caller[at : at + len(clip)] += clip * gain
        # The definition's end on the clean clip: derive cut FADE_MS after it.
        end = at / RATE + clip_end - FADE_MS / 1000
        if burst:
            b = breath(rng) if burst == "breath" else cough
            caller[round((end + 0.2) * RATE) :][: len(b)] += b * gain
        answer, answer_start, answer_end = derive(read_wav(SPEECH / reply, RATE))
        at = round((end + gap / 1000 - answer_start) * RATE)
        agent[at : at + len(answer)] += answer
        ends.append(end)
        t = at / RATE + answer_end + 0.8
    n = round((t + 0.5) * RATE)
    caller = caller[:n] + band_noise(n, noise_dbfs, 300, 3400, rng)

    def line(x: np.ndarray) -> np.ndarray:
        return ulaw_decode(ulaw_encode(np.clip(np.round(x), -32768, 32767).astype(np.int16)))

    return line(caller), line(agent[:n]), ends


@pytest.mark.parametrize(("noise_dbfs", "gain_db"), [(-45, 0), (-50, -5), (-55, -10), (-60, -15)])
def test_noisy_8k_recording_gives_known_gaps_within_20_ms(
    noise_dbfs: float, gain_db: float
) -> None:
    caller, agent, ends = noisy_call(noise_dbfs, gain_db, AFTER)
    analysis = analyze_channels(caller, agent, RATE)
    assert analysis.caller.noise_floor_dbfs == pytest.approx(noise_dbfs, abs=3)
    got = analysis.latencies_ms()
    assert len(got) == len(GAPS_MS), got
    errors = [round(g - t, 1) for g, t in zip(got, GAPS_MS, strict=True)]
    print(f"floor {noise_dbfs} dBFS: gap errors {errors} ms")
    assert max(map(abs, errors)) <= NOISY_TOLERANCE_MS, errors
    assert [g.caller_end_s for g in analysis.gaps] == pytest.approx(
        ends, abs=NOISY_TOLERANCE_MS / 1000
    )
    assert analysis.caller.confidence == "high" and not analysis.warnings


def test_breaths_and_coughs_are_loud_enough_to_lengthen_a_turn_by_energy_alone() -> None:
    """They are speech to the bare energy rule: the voicing and brightness checks drop them."""
    caller, agent, _ = noisy_call(-45, 0, AFTER)
    bare = analyze_channels(caller, agent, RATE, DetectorParams(voicing=False)).latencies_ms()
    off = [g - t for g, t in zip(bare, GAPS_MS, strict=True)]
    assert all(e < -100 for e, b in zip(off, AFTER, strict=True) if b), off


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="switchboard")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_a_channel_drowned_in_noise_is_reported_unsure(tmp_path: Path, capsys) -> None:
    caller, agent, _ = noisy_call(-24, 0, [None] * 5)
    analysis = analyze_channels(caller, agent, RATE)
    assert analysis.caller.confidence == "low" and analysis.caller.snr_db is not None
    assert analysis.caller.snr_db < 15
    assert analysis.agent.confidence == "high" and analysis.agent.snr_db > 30
    assert len(analysis.warnings) == 1 and "caller channel 0 is too noisy" in analysis.warnings[0]
    assert "warning: caller channel 0 is too noisy" in format_analysis(analysis)
    path = tmp_path / "drowned.wav"
    write_wav(path, np.stack([caller, agent], axis=1), RATE)
    assert _cli(["analyze", str(path), "--json", str(tmp_path / "a.json")]) == 0
    assert "warning: caller channel 0 is too noisy" in capsys.readouterr().out
    assert '"confidence": "low"' in (tmp_path / "a.json").read_text()


def test_vad_option_never_ends_caller_speech_later_than_the_energy() -> None:
    caller, agent, ends = noisy_call(-50, -5, AFTER)
    energy = analyze_channels(caller, agent, RATE)
    vad = analyze_channels(caller, agent, RATE, DetectorParams(detector="vad"))
    assert len(vad.gaps) == len(energy.gaps) == len(ends)
    for v, e in zip(vad.gaps, energy.gaps, strict=True):
        assert v.caller_end_s <= e.caller_end_s + 1e-9
        assert v.agent_start_s is not None and e.agent_start_s is not None
        assert v.agent_start_s >= e.agent_start_s - 1e-9
