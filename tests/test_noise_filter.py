"""Noise suppression on real audio, in-process: clean speech keeps its words and level, a real
noisy street does not start the agent's VAD, the Pipecat filter runs per call, and the agent
config names a wrong field."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import httpx
import numpy as np
import pytest
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.frames.frames import FilterEnableFrame

from conftest import (
    SHARED,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    SignedAgent,
    agent_lines,
    stored_call,
    wait_for,
)
from switchboard.agent.config import AgentConfig, load_agent_config
from switchboard.audio import (
    TelephonyUpsampler,
    dbfs,
    read_wav,
    ulaw_decode,
    ulaw_encode,
    write_wav,
)
from switchboard.engines.noise_filter import NoiseSuppressionFilter, NoiseSuppressor
from switchboard.engines.turn_detection import SharedSileroVADAnalyzer
from switchboard.engines.whisper import shared_whisper
from switchboard.errors import ConfigError
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.clarity import word_errors
from switchboard.loadtest.report import CallOutcome, format_summary
from switchboard.settings import Settings
from switchboard.speech_end import SpeechEnergyGate

NOISE = SHARED / "data" / "noise"
CHUNK = 320  # 20 ms at 16 kHz, as the transport hands audio to its filter

needs_noise = pytest.mark.skipif(
    not (NOISE / "manifest.tsv").exists(), reason=f"no recorded noise in {NOISE}"
)


def over_the_phone(samples8: np.ndarray) -> np.ndarray:
    """8 kHz int16 → µ-law → the agent's 16 kHz, as a Twilio caller is heard."""
    return TelephonyUpsampler().process(ulaw_decode(ulaw_encode(samples8)))


def suppressed(audio16: np.ndarray, limit_db: float | None = None) -> np.ndarray:
    suppressor = NoiseSuppressor(16000, attenuation_limit_db=limit_db)
    padded = np.concatenate([audio16, np.zeros(2 * CHUNK, dtype=np.int16)])
    out = [suppressor.process(padded[i : i + CHUNK]) for i in range(0, len(padded) - CHUNK + 1, CHUNK)]
    suppressor.close()
    return np.concatenate(out)


def vad_starts(audio16: np.ndarray) -> int:
    """How often the agent's VAD, set up as for a call, reports the caller starting to speak."""
    settings = Settings()
    vad = SharedSileroVADAnalyzer(
        params=VADParams(start_secs=settings.vad_start_secs, stop_secs=settings.vad_stop_secs),
        gate=SpeechEnergyGate(),
    )
    vad.set_sample_rate(16000)
    starts, state = 0, VADState.QUIET
    for i in range(0, len(audio16) - CHUNK + 1, CHUNK):
        new = vad._run_analyzer(audio16[i : i + CHUNK].tobytes())
        starts += new == VADState.SPEAKING and state != VADState.SPEAKING
        state = new
    return starts


def at_level(samples: np.ndarray, level_dbfs: float) -> np.ndarray:
    gain = 10 ** ((level_dbfs - dbfs(samples)) / 20)
    return np.clip(samples.astype(np.float64) * gain, -32768, 32767).astype(np.int16)


def transcript_of(name: str) -> str:
    rows = csv.DictReader((SHARED / "data" / "speech" / "manifest.tsv").open(), delimiter="\t")
    return next(r["transcript"] for r in rows if r["file"] == name)


def test_clean_speech_keeps_its_words_and_its_level() -> None:
    name = "osr_us_0010_s02_8k.wav"  # "Glue the sheet to the dark blue background."
    speech = at_level(read_wav(SHARED / "data" / "speech" / name, 8000), -26)
    # A second of the quiet line first: the filter has been running since the call began.
    line = over_the_phone(np.concatenate([np.zeros(8000, dtype=np.int16), speech]))
    out = suppressed(line)
    whisper = shared_whisper(threads=1)
    reference = transcript_of(name)
    errors_in, words = word_errors(reference, whisper.transcribe_pcm16(line).text)
    errors_out, _ = word_errors(reference, whisper.transcribe_pcm16(out).text)
    assert errors_out <= errors_in + 1, (errors_in, errors_out, words)
    assert abs(dbfs(out[8000 * 2 :]) - dbfs(line[8000 * 2 :])) < 1.5


@needs_noise
def test_a_noisy_street_alone_does_not_start_the_vad_once_suppressed() -> None:
    # Eight seconds of real traffic as loud as the caller's speech (0 dB SNR). RNNoise's residue
    # (musical noise, bursts it lets through) must not pass for speech: each start would be a
    # barge-in stopping the agent. The unfiltered line does not start the VAD either, so this
    # checks the filter adds no false starts; background *voices* do (docs/performance.md).
    street = read_wav(NOISE / "berlin_street_16k.wav", 8000)[: 8 * 8000]
    assert vad_starts(suppressed(over_the_phone(at_level(street, -26)))) == 0


def test_the_pipecat_filter_keeps_a_call_stream_whole_and_can_be_switched_off() -> None:
    speech = read_wav(SHARED / "data" / "speech" / "fw_stereo_right_16k.wav", 16000)
    chunks = [speech[i : i + CHUNK].tobytes() for i in range(0, len(speech) - CHUNK + 1, CHUNK)]

    async def run() -> tuple[list[bytes], bytes]:
        audio_filter = NoiseSuppressionFilter(attenuation_limit_db=12.0)
        await audio_filter.start(16000)
        out = [await audio_filter.filter(c) for c in chunks[:-1]]
        await audio_filter.process_frame(FilterEnableFrame(enable=False))
        passed = await audio_filter.filter(chunks[-1])
        await audio_filter.stop()
        return out, passed

    out, passed = asyncio.run(run())
    assert [len(c) for c in out] == [len(c) for c in chunks[:-1]]  # 20 ms in, 20 ms out
    assert passed == chunks[-1]


def test_a_rate_that_does_not_divide_48k_is_refused() -> None:
    with pytest.raises(ValueError, match="44100"):
        NoiseSuppressor(44100)


AGENT = """version: 1
name: Noise test
greeting: Hello.
fallback: Sorry?
"""


def test_noise_suppression_is_configured_per_agent(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(AGENT + "noise_suppression: {enabled: true, attenuation_limit_db: 12}\n")
    config = load_agent_config(path).noise_suppression
    assert config.enabled and config.attenuation_limit_db == 12
    path.write_text(AGENT + "noise_suppression: {enabled: true, attenuation_limit_db: null}\n")
    assert load_agent_config(path).noise_suppression.attenuation_limit_db is None
    assert AgentConfig(name="x", greeting="Hi.", fallback="Sorry?").noise_suppression.enabled is False


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ("{enabled: true, attenuation_limit_db: 1}", "noise_suppression.attenuation_limit_db"),
        ("{enabled: maybe}", "noise_suppression.enabled"),
        ("{enabled: true, strength: 3}", "noise_suppression.strength"),
    ],
)
def test_a_bad_noise_suppression_block_names_its_field(tmp_path: Path, block: str, field: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(AGENT + f"noise_suppression: {block}\n")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_agent_config(path)


DENOISED_LINE = "+15005550777"  # no other test agent claims it
DENOISED_AGENT = f"""version: 1
name: Noisy line agent
numbers: ["{DENOISED_LINE}"]
greeting: Hello, this line hears through noise.
fallback: I am sorry, I did not understand that.
noise_suppression: {{enabled: true}}
intents:
  - name: boats
    phrases: [canoe, canoes, boat, planks, plank, birch]
    reply: You mentioned a boat on the water.
  - name: goodbye
    phrases: [horizon, distant]
    reply: Thank you for calling, goodbye.
    end_call: true
"""


@needs_noise
async def test_a_call_in_street_noise_is_understood_with_suppression_on(
    signed_agent: SignedAgent, tmp_path: Path
) -> None:
    # The caller stands in traffic: two seconds of it, then a sentence over it at 10 dB SNR.
    speech = at_level(read_wav(SHARED / "data" / "speech" / "osr_us_0010_s01_8k.wav", 8000), -26)
    street = at_level(read_wav(NOISE / "berlin_street_16k.wav", 8000), -36)
    lead = 2 * 8000
    mixed = street[: lead + len(speech)].astype(np.int32)
    mixed[lead:] += speech
    noisy = tmp_path / "birch_canoe_in_traffic_8k.wav"
    write_wav(noisy, np.clip(mixed, -32768, 32767), 8000)
    # Written whole under another name, then renamed: the server re-reads the directory while it runs.
    staged = signed_agent.agents_dir / "noisy_line.yaml.part"
    staged.write_text(DENOISED_AGENT)
    staged.replace(signed_agent.agents_dir / "noisy_line.yaml")

    def loaded() -> bool:
        try:
            httpx.get(f"{signed_agent.base_url}/health", timeout=5)  # re-reads the directory
        except httpx.HTTPError:
            return False  # a busy machine: ask again
        return "noisy_line.yaml loaded" in signed_agent.server.log()

    wait_for(loaded, 30, what="the noisy line's agent")

    script = CallScript(
        to_number=DENOISED_LINE,
        turns=[
            CallerTurn(audio=noisy),  # "The birch canoe slid on the smooth planks."
            CallerTurn(audio=SHARED / "data" / "speech" / "fw_stereo_right_16k.wav", hangup_expected=True),
        ],
    )
    result = await run_call(signed_agent.base_url, script, transcribe=False,
                            auth_token=TWILIO_AUTH_TOKEN, account_sid=TWILIO_ACCOUNT_SID)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert agent_lines(await stored_call(result.call_sid)) == [
        "Hello, this line hears through noise.",
        "You mentioned a boat on the water.",
        "Thank you for calling, goodbye.",
    ]
    assert "caller audio filter on: RNNoise noise suppression" in signed_agent.server.log()
