"""The default load-test scenario: multi-turn calls of real speech clips, pauses, barge-ins, goodbye."""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from switchboard.loadtest import known_end
from switchboard.loadtest.caller import CallerTurn, CallScript

DEFAULT_SPEECH_DIR = Path(
    os.environ.get("SWITCHBOARD_SHARED_DIR", Path(__file__).resolve().parents[4] / "shared")
) / "data" / "speech"
GOODBYE_CLIP = "fw_stereo_right_16k.wav"  # "The horizon seems extremely distant."
# Pauses longer than the agent's VAD stop time inside these clips make the agent take one clip
# as several turns, so "end of the clip" would not be the end of a turn.
MULTI_PHRASE_CLIPS = frozenset(
    {
        "pocketsphinx_cards_005_16k.wav",
        "ljspeech_LJ050-0131_22k.wav",
        "speech_recognition_one_two_three_44k.wav",
        "jfk_inaugural_16k.wav",
    }
)


@dataclass(frozen=True)
class SpeechClip:
    """One manifest clip: the file, what is said in it, and the shared clip it came from."""

    path: Path
    transcript: str
    source: str


def load_manifest(speech_dir: Path = DEFAULT_SPEECH_DIR) -> list[SpeechClip]:
    """The clips of ``speech_dir``: its known-end manifest if it has one, else ``manifest.tsv``."""
    if (speech_dir / known_end.MANIFEST).exists():
        return [SpeechClip(c.path, c.transcript, c.source) for c in known_end.load_manifest(speech_dir)]
    with open(speech_dir / "manifest.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [SpeechClip(speech_dir / r["file"], r["transcript"], r["file"]) for r in rows]


class ScenarioOptions(BaseModel):
    """How the default scenario's callers behave; each call draws its own script from these."""

    speech_dir: Path = DEFAULT_SPEECH_DIR
    min_turns: int = Field(default=2, ge=0, description="Caller turns before the goodbye")
    max_turns: int = Field(default=4, ge=0)
    min_pause_ms: int = Field(default=300, ge=0, description="Caller's pause after a reply")
    max_pause_ms: int = Field(default=1500, ge=0)
    barge_in_probability: float = Field(
        default=0.15, ge=0.0, le=1.0, description="Chance that a turn is spoken over the reply"
    )
    min_barge_in_ms: int = Field(default=600, description="Barge in this long after the reply began")
    max_barge_in_ms: int = Field(default=1200)
    goodbye: bool = Field(default=True, description="End with the goodbye clip; the agent hangs up")


class Scenario:
    """Draws one reproducible CallScript per call index from the manifest's single-phrase clips."""

    def __init__(self, options: ScenarioOptions, *, seed: int = 0, reply_timeout_ms: int = 5_000):
        if options.max_turns < options.min_turns:
            raise ValueError("max_turns must be at least min_turns")
        self.options = options
        self._seed = seed
        self._reply_timeout_ms = reply_timeout_ms
        clips = load_manifest(options.speech_dir)
        by_name = {c.source: c for c in clips}
        if options.goodbye and GOODBYE_CLIP not in by_name:
            raise ValueError(f"{options.speech_dir} has no goodbye clip {GOODBYE_CLIP}")
        self._goodbye = by_name.get(GOODBYE_CLIP) if options.goodbye else None
        self.pool = [
            c for c in clips if c.source != GOODBYE_CLIP and c.source not in MULTI_PHRASE_CLIPS
        ]
        if not self.pool and options.max_turns > 0:
            raise ValueError(f"{options.speech_dir} has no single-phrase clips")

    def clips(self) -> list[Path]:
        """Every clip a call may say, for loading them before the clock starts."""
        return [c.path for c in self.pool] + ([self._goodbye.path] if self._goodbye else [])

    def script(self, call_index: int) -> CallScript:
        """The script of call ``call_index``; the same seed and index always give the same call."""
        o = self.options
        rng = random.Random(f"{self._seed}:{call_index}")
        n = rng.randint(o.min_turns, o.max_turns)
        turns = [self._turn(rng, rng.choice(self.pool)) for _ in range(n)]
        if self._goodbye is not None:
            # Barging in on the goodbye would leave the reply it interrupts unmeasured for nothing.
            goodbye = self._turn(rng, self._goodbye, allow_barge_in=False)
            turns.append(goodbye.model_copy(update={"hangup_expected": True}))
        return CallScript(turns=turns, reply_timeout_ms=self._reply_timeout_ms)

    def _turn(self, rng: random.Random, clip: SpeechClip, allow_barge_in: bool = True) -> CallerTurn:
        o = self.options
        barge_in = None
        if allow_barge_in and rng.random() < o.barge_in_probability:
            barge_in = rng.randint(o.min_barge_in_ms, o.max_barge_in_ms)
        return CallerTurn(
            audio=clip.path,
            expected_text=clip.transcript,
            pause_before_ms=rng.randint(o.min_pause_ms, o.max_pause_ms),
            barge_in_after_ms=barge_in,
        )
