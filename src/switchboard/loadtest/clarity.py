"""Audio clarity, measured: word accuracy of the agent's replies as heard over 8 kHz µ-law.

The seed's "> 90 % audio clarity" is defined here as corpus word accuracy (1 − WER, over all
sampled replies) of Whisper's transcript of the agent channel of a call recording, against the
agent config's fixed utterance closest to it. The closest utterance stands for "what the agent
meant to say": a scripted agent can only say one of them, and choosing by the transcript keeps a
misheard *caller* (an STT problem, not an audio one) from counting against clarity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from pydantic import BaseModel

from switchboard.agent.config import AgentConfig
from switchboard.agent.intents import normalize
from switchboard.audio import resample
from switchboard.loadtest.report import CallResult

_PAD_S = 0.2  # soft word onsets and endings sit below the speech threshold; Whisper needs them


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edit distance, reference word count) after normalising case and punctuation."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


def word_accuracy(reference: str, hypothesis: str) -> float:
    """1 − WER, floored at 0 (insertions can push WER past 1)."""
    errors, n = word_errors(reference, hypothesis)
    return max(0.0, 1.0 - errors / n) if n else float(not normalize(hypothesis))


class ClarityTurn(BaseModel):
    """One sampled agent reply: what Whisper heard and how close it is to what was meant."""

    call_sid: str
    turn: int | None  # None for the greeting
    start_s: float
    duration_s: float
    transcript: str
    reference: str
    errors: int
    words: int
    word_accuracy: float


@dataclass(frozen=True)
class _Span:
    turn: int | None
    start_s: float
    duration_s: float


def reply_spans(result: CallResult) -> list[_Span]:
    """The greeting and replies of a call that were heard to their end.

    A reply the caller barged into is cut short by design, so it says nothing about clarity.
    """
    interrupted = {
        t.index - 1 for t in result.turns if t.barge_in and t.agent_talking_at_barge_in
    }
    spans = []
    g = result.greeting
    if g is not None and g.duration_s and -1 not in interrupted:
        spans.append(_Span(None, g.start_s, g.duration_s))
    for t in result.turns:
        if t.agent_audio_start_s is not None and t.reply_duration_s and t.index not in interrupted:
            spans.append(_Span(t.index, t.agent_audio_start_s, t.reply_duration_s))
    return spans


class ClarityJudge:
    """Scores transcripts against the agent's fixed utterances."""

    def __init__(self, config: AgentConfig):
        self.utterances = config.fixed_utterances()

    def closest(self, transcript: str) -> tuple[str, int, int]:
        """(utterance, word errors, reference words) of the utterance the transcript is nearest."""
        scored = [(u, *word_errors(u, transcript)) for u in self.utterances]
        return min(scored, key=lambda s: (s[1] / max(s[2], 1), s[1]))

    def score_recording(
        self, result: CallResult, recording: Path, agent_channel: int = 1
    ) -> list[ClarityTurn]:
        """Transcribe each fully heard reply in ``recording`` and score it (blocking: Whisper)."""
        # Heavy; loaded only when clarity is asked for.
        from switchboard.engines.whisper import SAMPLE_RATE, shared_whisper

        data, rate = sf.read(str(recording), dtype="int16", always_2d=True)
        agent = resample(data[:, agent_channel], rate, SAMPLE_RATE)
        whisper = shared_whisper()
        out = []
        for span in reply_spans(result):
            a = max(0, int((span.start_s - _PAD_S) * SAMPLE_RATE))
            b = int((span.start_s + span.duration_s + _PAD_S) * SAMPLE_RATE)
            pcm = agent[a:b].astype(np.float32) / 32768.0
            text = whisper.transcribe(pcm).text
            reference, errors, words = self.closest(text)
            out.append(
                ClarityTurn(
                    call_sid=result.call_sid,
                    turn=span.turn,
                    start_s=span.start_s,
                    duration_s=span.duration_s,
                    transcript=text,
                    reference=reference,
                    errors=errors,
                    words=words,
                    word_accuracy=max(0.0, 1 - errors / words) if words else 0.0,
                )
            )
        return out


def corpus_accuracy(turns: list[ClarityTurn]) -> float | None:
    """Word accuracy over all sampled replies together (long replies weigh more)."""
    words = sum(t.words for t in turns)
    return None if not words else max(0.0, 1 - sum(t.errors for t in turns) / words)
