"""Speech clips with a known end: the caller's end of speech is a fact of the file, not a guess.

Each source clip is cut 20 ms after its last speech frame (``switchboard.speech_end``), faded
out over those 20 ms and followed by digital silence, so the signal ends at one sample and
nothing after it can be mistaken for speech; by the same definition that sample is the clip's
end of speech, so deriving a derived clip changes nothing. The clip's start is trimmed by up to 19 ms of
leading background so that the end falls on a 20 ms media-frame boundary: the agent then
receives the last speech sample exactly at the end of speech (see the packetization note in
``switchboard.speech_end``). ``known_end.tsv`` records ``speech_end_s`` for every clip.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from switchboard.audio import TELEPHONY_RATE, read_wav, write_wav
from switchboard.speech_end import PACKET_MS, speech_bounds

MANIFEST = "known_end.tsv"  # a name of its own: clip folders often have a manifest.tsv
FADE_MS = 20
SILENCE_AFTER_S = 0.5
_FIELDS = ["file", "source", "transcript", "speech_start_s", "speech_end_s", "seconds"]


@dataclass(frozen=True)
class KnownEndClip:
    """One derived clip: 8 kHz mono, speech from ``speech_start_s`` to ``speech_end_s``."""

    path: Path
    source: str
    transcript: str
    speech_start_s: float
    speech_end_s: float


_MAX_PASSES = 8


def derive(samples: np.ndarray, rate: int = TELEPHONY_RATE) -> tuple[np.ndarray, float, float]:
    """Cut, fade and pad one clip; returns the samples and its speech start and end in seconds.

    The cut clip is measured again until it measures its own end: cutting takes away background
    the floor was read from, and a final burst barely over the source's threshold can sink under
    the clip's own. The result is a fixed point: deriving it again gives it back unchanged.
    """
    for _ in range(_MAX_PASSES):
        out, start_s, end_s = _cut(samples, rate)
        if np.array_equal(out, samples):
            break
        samples = out
    else:
        raise ValueError("clip's end did not settle")
    return out, start_s, end_s


def _cut(samples: np.ndarray, rate: int) -> tuple[np.ndarray, float, float]:
    """One pass of ``derive``."""
    bounds = speech_bounds(samples, rate)
    if bounds is None:
        raise ValueError("clip has no speech")
    fade = rate * FADE_MS // 1000
    end = round(bounds.end * rate)
    # A signal that already stops where its speech ends (the definition puts the end at its
    # last sample) is not cut again.
    ongoing = bool(np.any(samples[end:]))
    if ongoing:
        end = min(len(samples), end + fade)
    packet = rate * PACKET_MS // 1000
    start = end % packet  # leading background trimmed so the end sits on a frame boundary
    cut = samples[start:end].astype(np.float32)
    if ongoing:
        tail = cut[-fade:] * np.linspace(1.0, 0.0, fade, endpoint=False, dtype=np.float32)
        # No faded sample rounds to zero: the signal's last sample stays where the cut is.
        cut[-fade:] = np.where(np.abs(tail) < 1.0, np.where(tail < 0, -1.0, 1.0), tail)
    out = np.concatenate([cut, np.zeros(round(SILENCE_AFTER_S * rate), np.float32)])
    out = np.round(out).astype(np.int16)
    return out, bounds.start - start / rate, (end - start) / rate


def derive_clips(sources: list[tuple[Path, str]], out_dir: Path) -> list[KnownEndClip]:
    """Derive clean-ended 8 kHz copies of ``(path, transcript)`` sources into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for path, transcript in sources:
        samples, start_s, end_s = derive(read_wav(path, TELEPHONY_RATE))
        target = out_dir / f"{path.stem}_known_end.wav"
        write_wav(target, samples, TELEPHONY_RATE)
        clips.append(KnownEndClip(target, path.name, transcript, round(start_s, 4), round(end_s, 4)))
    with open(out_dir / MANIFEST, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(_FIELDS)
        for c in clips:
            seconds = round(len(read_wav(c.path, TELEPHONY_RATE)) / TELEPHONY_RATE, 4)
            writer.writerow([c.path.name, c.source, c.transcript, c.speech_start_s, c.speech_end_s, seconds])
    return clips


def load_manifest(directory: Path) -> list[KnownEndClip]:
    """The clips a ``manifest.tsv`` in ``directory`` lists."""
    with open(directory / MANIFEST, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        KnownEndClip(
            directory / r["file"],
            r["source"],
            r["transcript"],
            float(r["speech_start_s"]),
            float(r["speech_end_s"]),
        )
        for r in rows
    ]


def speech_end_of(path: Path) -> float | None:
    """The manifest's ``speech_end_s`` for a derived clip, if it has a manifest beside it."""
    manifest = path.parent / MANIFEST
    if not manifest.exists():
        return None
    return next((c.speech_end_s for c in load_manifest(path.parent) if c.path.name == path.name), None)
