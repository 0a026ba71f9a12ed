"""Derive the benchmarks' known-end clips from ../shared/data/speech into benchmarks/clips/.

    .venv/bin/python benchmarks/make_known_end_clips.py

Every clip of the shared manifest except the 11 s inaugural address (several sentences, not
one caller turn) is cut where its speech energy ends, faded and padded with digital silence;
``benchmarks/clips/known_end.tsv`` records where each one's speech ends.
"""

from __future__ import annotations

import csv

from _common import REPO, SHARED
from switchboard.loadtest.known_end import derive_clips

CLIPS = REPO / "benchmarks" / "clips"
SKIP = {"jfk_inaugural_16k.wav"}


def main() -> int:
    speech = SHARED / "data" / "speech"
    with open(speech / "manifest.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["file"] not in SKIP]
    clips = derive_clips([(speech / r["file"], r["transcript"]) for r in rows], CLIPS)
    for c in clips:
        print(f"{c.path.name:52s} speech {c.speech_start_s:6.3f} .. {c.speech_end_s:6.3f} s")
    print(f"{len(clips)} clips and their manifest in {CLIPS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
