"""Noise suppression, measured: WER in real recorded noise, false barge-ins, latency and CPU.

Speech from ``shared/data/speech`` (held out: the five 8 kHz OSR clips were used to choose the
attenuation limit, so they are left out here unless ``--clips all``) is set to -26 dBFS active
level and mixed with real outdoor recordings from ``shared/data/noise`` (crowd and market
babble, street traffic, street with music; CC BY 4.0, see that folder's manifest) at 0, 5 and
10 dB SNR, with a second of the noise before the speech as a caller's line has. The mix goes
through the phone path: 8 kHz, G.711 µ-law, the agent's 8→16 kHz upsampler, then the noise
filter exactly as the input transport runs it (20 ms chunks, a fresh filter per call), then the
agent's Whisper engine. WER is corpus WER (errors over reference words) after normalising case,
punctuation and digits.

False barge-ins: 20 noise-only calls (8 s each, five per recording, at the level of the 5 dB
and the 0 dB mixes) through the agent's VAD as it is built for a call (Silero with the
SpeechEnergyGate, the settings' start/stop seconds); every VAD start is a barge-in the agent
would act on. Latency added: the filter's delay (cross-correlation of its output with its
input) plus the p95 of its compute per 20 ms chunk. CPU per call: filter CPU over audio time.

    nice .venv/bin/python benchmarks/noise.py [--attenuation 18] [--variants none,12,18,24]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import platform
import re
import time
import zlib
from pathlib import Path

import numpy as np

from _common import SHARED, summarize, update_doc_section, write_result
from switchboard.audio import TelephonyUpsampler, read_wav, ulaw_decode, ulaw_encode
from switchboard.engines.noise_filter import NoiseSuppressor
from switchboard.engines.whisper import WhisperEngine
from switchboard.loadtest.clarity import word_errors

SPEECH = SHARED / "data" / "speech"
NOISE = SHARED / "data" / "noise"
TUNING_CLIPS = {f"osr_us_0010_s0{i}_8k.wav" for i in range(1, 6)}
SNRS = (0, 5, 10)
SPEECH_DBFS = -26.0
LEAD_IN_S = 1.0
TAIL_S = 0.3
CHUNK = 320  # 20 ms at 16 kHz, as the transport hands audio to its filter
BARGE_IN_CALLS_PER_NOISE = 5
BARGE_IN_CALL_S = 8.0


# -- the phone path ----------------------------------------------------------------------------

def active_rms(samples: np.ndarray, rate: int) -> float:
    """RMS over 20 ms frames within 30 dB of the loudest (a simple active speech level)."""
    hop = rate // 50
    n = len(samples) // hop
    frames = samples[: n * hop].astype(np.float64).reshape(n, hop) / 32768.0
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    active = 20 * np.log10(rms) > 20 * np.log10(rms.max()) - 30
    return float(np.sqrt(np.mean(frames[active] ** 2)))


def scaled(noise: np.ndarray, dbfs: float) -> np.ndarray:
    rms = np.sqrt(np.mean((noise.astype(np.float64) / 32768.0) ** 2))
    return noise.astype(np.float64) / 32768.0 * (10 ** (dbfs / 20) / rms)


def noise_span(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of a recording from a random offset, wrapping round its end."""
    start = int(rng.integers(0, len(noise)))
    return np.resize(np.roll(noise, -start), length)


def phone_call(speech8: np.ndarray, noise8: np.ndarray | None, snr_db: float | None,
               rng: np.random.Generator) -> np.ndarray:
    """Speech (with a lead-in and a tail) in noise, µ-law coded, as the agent hears it at 16 kHz."""
    s = speech8.astype(np.float64) / 32768.0 * (10 ** (SPEECH_DBFS / 20) / active_rms(speech8, 8000))
    lead, tail = int(LEAD_IN_S * 8000), int(TAIL_S * 8000)
    x = np.concatenate([np.zeros(lead), s, np.zeros(tail)])
    if noise8 is not None and snr_db is not None:
        x = x + scaled(noise_span(noise8, len(x), rng), SPEECH_DBFS - snr_db)
    return over_the_phone(x)


def over_the_phone(x: np.ndarray) -> np.ndarray:
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    return TelephonyUpsampler().process(ulaw_decode(ulaw_encode(pcm)))


def filtered(audio16: np.ndarray, attenuation_db: float | None | str) -> tuple[np.ndarray, list[float], float]:
    """Run the filter as the transport does; (audio, compute seconds per chunk, CPU seconds)."""
    if attenuation_db == "off":
        return audio16, [], 0.0
    suppressor = NoiseSuppressor(16000, attenuation_limit_db=attenuation_db)
    padded = np.concatenate([audio16, np.zeros(CHUNK * 2, dtype=np.int16)])
    out, chunk_s = [], []
    cpu0 = time.process_time()
    for i in range(0, len(padded) - CHUNK + 1, CHUNK):
        t0 = time.perf_counter()
        out.append(suppressor.process(padded[i : i + CHUNK]))
        chunk_s.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    suppressor.close()
    return np.concatenate(out), chunk_s, cpu


def utterance(audio16: np.ndarray) -> np.ndarray:
    """The part the agent's VAD would hand Whisper: from just before the speech to the end.

    Whisper given the lead-in too often loops on short windows, which is not what a call does.
    """
    return audio16[int((LEAD_IN_S - 0.3) * 16000) :]


# -- WER ---------------------------------------------------------------------------------------

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth", "twenty": "twentieth", "thirty": "thirtieth"}


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    return " ".join(str(n))


def spoken_digits(text: str) -> str:
    """'10 of clubs' → 'ten of clubs', '20th' → 'twentieth', '1, 2, 3' → 'one two three'."""
    def words(match: re.Match) -> str:
        said = _number_words(int(match.group(1)))
        if match.group(2):
            last = said.split()[-1]
            said = said[: -len(last)] + _ORDINAL.get(last, last + "th")
        return said
    return re.sub(r"\b(\d{1,2})(st|nd|rd|th)?\b", words, text)


def errors(reference: str, hypothesis: str) -> tuple[int, int]:
    return word_errors(spoken_digits(reference), spoken_digits(hypothesis))


# -- VAD ---------------------------------------------------------------------------------------

def vad_starts(audio16: np.ndarray) -> int:
    """VAD starts (barge-ins) over a call's caller audio, through the agent's own VAD."""
    from pipecat.audio.vad.vad_analyzer import VADParams, VADState

    from switchboard.engines.turn_detection import SharedSileroVADAnalyzer
    from switchboard.settings import Settings
    from switchboard.speech_end import SpeechEnergyGate

    settings = Settings()
    vad = SharedSileroVADAnalyzer(
        params=VADParams(start_secs=settings.vad_start_secs, stop_secs=settings.vad_stop_secs),
        gate=SpeechEnergyGate(),
    )
    vad.set_sample_rate(16000)

    async def run() -> int:
        starts, state = 0, VADState.QUIET
        for i in range(0, len(audio16) - CHUNK + 1, CHUNK):
            new = await vad.analyze_audio(audio16[i : i + CHUNK].tobytes())
            if new == VADState.SPEAKING and state != VADState.SPEAKING:
                starts += 1
            state = new
        return starts

    return asyncio.run(run())


# -- the benchmark -----------------------------------------------------------------------------

def load_speech(which: str) -> list[dict]:
    rows = list(csv.DictReader((SPEECH / "manifest.tsv").open(), delimiter="\t"))
    if which == "held-out":
        rows = [r for r in rows if r["file"] not in TUNING_CLIPS]
    elif which == "tuning":
        rows = [r for r in rows if r["file"] in TUNING_CLIPS]
    return rows


def load_noises() -> dict[str, np.ndarray]:
    rows = list(csv.DictReader((NOISE / "manifest.tsv").open(), delimiter="\t"))
    return {r["file"].removesuffix("_16k.wav"): read_wav(NOISE / r["file"], 8000) for r in rows}


def measure_wer(variants: list, speech: list[dict], noises: dict[str, np.ndarray],
                engine: WhisperEngine) -> dict:
    tally: dict[str, dict[str, list[int]]] = {str(v): {} for v in variants}
    chunk_times: dict[str, list[float]] = {str(v): [] for v in variants}
    cpu: dict[str, list[float]] = {str(v): [0.0, 0.0] for v in variants}
    samples = []
    conditions = [("clean", None, None)] + [(n, n, snr) for n in noises for snr in SNRS]
    for clip in speech:
        speech8 = read_wav(SPEECH / clip["file"], 8000)
        for label, noise, snr in conditions:
            # The same noise span for every variant: they differ only by the filter.
            rng = np.random.default_rng(zlib.crc32(f"{clip['file']}|{label}|{snr}".encode()))
            call = phone_call(speech8, noises.get(noise) if noise else None, snr, rng)
            for variant in variants:
                out, chunks, cpu_s = filtered(call, variant)
                chunk_times[str(variant)].extend(chunks)
                cpu[str(variant)][0] += cpu_s
                cpu[str(variant)][1] += len(call) / 16000
                text = engine.transcribe_pcm16(utterance(out)).text
                e, n = errors(clip["transcript"], text)
                key = "clean" if snr is None else f"{snr}dB"
                for k in (key, f"{key}:{label}") if snr is not None else (key,):
                    tally[str(variant)].setdefault(k, [0, 0])
                    tally[str(variant)][k][0] += e
                    tally[str(variant)][k][1] += n
                samples.append({"clip": clip["file"], "noise": label, "snr_db": snr,
                                "variant": str(variant), "errors": e, "words": n, "heard": text})
    wer = {v: {k: round(100 * e / n, 1) for k, (e, n) in sorted(t.items())} for v, t in tally.items()}
    compute = {v: summarize([s * 1000 for s in t]) | {"p95_ms": round(float(np.percentile(t, 95)) * 1000, 2) if t else None}
               for v, t in chunk_times.items()}
    cpu_share = {v: round(100 * c / a, 2) if c else 0.0 for v, (c, a) in cpu.items()}
    return {"wer_percent": wer, "chunk_compute_ms": compute, "cpu_percent_of_a_core": cpu_share,
            "transcripts": samples}


def measure_barge_ins(variants: list, noises: dict[str, np.ndarray]) -> dict:
    results: dict[str, dict[str, int]] = {}
    for snr in (5, 0):
        level = SPEECH_DBFS - snr
        calls = []
        for name, noise in noises.items():
            for i in range(BARGE_IN_CALLS_PER_NOISE):
                rng = np.random.default_rng(1000 * i + len(name))
                calls.append((name, over_the_phone(scaled(noise_span(noise, int(BARGE_IN_CALL_S * 8000), rng), level))))
        for variant in variants:
            per_noise: dict[str, int] = {}
            for name, call in calls:
                out, _, _ = filtered(call, variant)
                per_noise[name] = per_noise.get(name, 0) + vad_starts(out)
            results[f"{variant}@{level:.0f}dBFS"] = per_noise | {"calls": len(calls), "total": sum(per_noise.values())}
    return results


def measure_delay(attenuation: float | None) -> float:
    """The filter's delay in ms: where its output best matches its input, on clean speech."""
    x = read_wav(SPEECH / "fw_stereo_left_16k.wav", 16000)
    y, _, _ = filtered(x, attenuation)
    n = len(x) - 800
    lags = [float(np.dot(x[:n].astype(np.float64), y[d : d + n].astype(np.float64))) for d in range(800)]
    return int(np.argmax(lags)) / 16.0


def parse_variant(v: str) -> float | None | str:
    return v if v in ("off",) else None if v == "none" else float(v)


def goals(result: dict) -> list[tuple[str, bool]]:
    """Issue 23's goals for the chosen filter, judged from the result."""
    chosen, wer = result["chosen"], result["wer_percent"]
    snrs = [f"{snr}dB" for snr in SNRS]
    barge_ins = sum(v["total"] for k, v in result["false_barge_ins"].items() if k.startswith(f"{chosen}@"))
    added = result["delay_ms"] + result["chunk_compute_ms"][chosen]["p95_ms"]
    return [
        (f"WER ≤ 1.5× clean at 5 dB ({wer[chosen]['5dB']} vs clean {wer['off']['clean']})",
         wer[chosen]["5dB"] <= 1.5 * wer["off"]["clean"]),
        ("better than without at every SNR", all(wer[chosen][s] < wer["off"][s] for s in snrs)),
        (f"clean WER within 1 point ({wer['off']['clean']} → {wer[chosen]['clean']})",
         abs(wer[chosen]["clean"] - wer["off"]["clean"]) <= 1),
        (f"0 false barge-ins ({barge_ins})", barge_ins == 0),
        (f"≤ 10 ms p95 added ({added:.0f} ms)", added <= 10),
    ]


def _variant_name(v: str) -> str:
    return "off" if v == "off" else "RNNoise" if v == "None" else f"RNNoise, limit {v} dB"


def markdown(result: dict) -> str:
    chosen, wer, noises = result["chosen"], result["wer_percent"], result["noises"]
    cols = ["clean", "0dB", "5dB", "10dB"]
    c = result["chunk_compute_ms"][chosen]
    cpu = result["cpu_percent_of_a_core"][chosen]
    lines = [
        "## Noise suppression (RNNoise) in real recorded noise (`benchmarks/noise.py`)",
        "",
        f"{result['clips']} held-out speech clips ({result['words']} words) at -26 dBFS, each mixed with "
        f"{len(noises)} recordings ({', '.join(noises)}) at 0, 5 and 10 dB SNR after a second of the "
        "noise alone, through 8 kHz µ-law, the agent's upsampler, the filter as the transport runs it "
        "(20 ms chunks, one filter per call) and the agent's Whisper tiny.en on the utterance. Corpus "
        "WER, % (digits normalised to words):",
        "",
        "| filter | " + " | ".join(c_.replace("dB", " dB") for c_ in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for v in result["variants"]:
        lines.append(f"| {_variant_name(v)} | " + " | ".join(str(wer[v].get(k, "")) for k in cols) + " |")
    lines += [
        "",
        "At 5 dB, per recording (off → RNNoise): " + ", ".join(
            f"{n} {wer['off'].get('5dB:' + n)} → {wer[chosen].get('5dB:' + n)}" for n in noises) + ".",
        "",
        f"False barge-ins: VAD starts on {result['barge_in_calls']} noise-only calls of 8 s (five per "
        "recording), through the agent's VAD (Silero behind the speech-energy gate, the settings' start "
        "and stop seconds), with the noise as loud as in the 5 dB and the 0 dB mixes:",
        "",
        "| filter @ noise level | " + " | ".join(noises) + " | total |",
        "|---|" + "---|" * (len(noises) + 1),
    ]
    for key, counts in result["false_barge_ins"].items():
        v, level = key.split("@")
        lines.append(f"| {_variant_name(v)} @ {level} | " + " | ".join(str(counts[n]) for n in noises)
                     + f" | {counts['total']} |")
    lines += [
        "",
        f"Latency added: {result['delay_ms']:.0f} ms of delay in the signal (RNNoise 0.2's output lags its "
        "input by two 10 ms frames; the resampling adds 1 ms), plus the compute per 20 ms chunk, "
        f"{cpu / 100 * 20:.1f} ms of CPU on average; on this shared, loaded machine (niced) its wall time "
        f"was p50 {c['p50']} ms, p95 {c['p95_ms']} ms. CPU per call: {cpu} % of one core for as long as "
        f"the caller's audio flows. Runtime {result['runtime_s']:.0f} s on {result['machine']}.",
        "",
        "Against the issue's goals: " + "; ".join(f"{goal} — {'met' if ok else 'not met'}" for goal, ok in goals(result))
        + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="off,none", help="off, none (unlimited) or a limit in dB")
    parser.add_argument("--chosen", default="none", help="the variant the agent ships (for the summary)")
    parser.add_argument("--clips", choices=["held-out", "tuning", "all"], default="held-out")
    parser.add_argument("--name", default="noise")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--doc-from", type=Path, help="only write the doc section from this result")
    args = parser.parse_args()
    if args.doc_from:
        update_doc_section("noise", markdown(json.loads(args.doc_from.read_text())))
        return
    variants = [parse_variant(v) for v in args.variants.split(",")]
    chosen = str(parse_variant(args.chosen))
    speech, noises = load_speech(args.clips), load_noises()
    engine = WhisperEngine(threads=1)
    started = time.monotonic()
    result = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores (shared, niced)",
        "clips": len(speech),
        "words": sum(len(r["transcript"].split()) for r in speech),
        "noises": list(noises),
        "variants": [str(v) for v in variants],
        "chosen": chosen,
        "barge_in_calls": len(noises) * BARGE_IN_CALLS_PER_NOISE,
    }
    result |= measure_wer(variants, speech, noises, engine)
    result["false_barge_ins"] = measure_barge_ins(variants, noises)
    result["delay_ms"] = measure_delay(parse_variant(args.chosen))
    result["runtime_s"] = round(time.monotonic() - started, 1)
    path = write_result(args.name, result)
    print(f"wrote {path}")
    for v in result["variants"]:
        print(v, result["wer_percent"][v], result["cpu_percent_of_a_core"][v], result["chunk_compute_ms"][v])
    print(result["false_barge_ins"], result["delay_ms"])
    if not args.no_doc:
        update_doc_section("noise", markdown(result))


if __name__ == "__main__":
    main()
