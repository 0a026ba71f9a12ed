"""Sending keypad digits to the far end (to navigate a remote IVR), written once for every ingress.

The call controller queues the dial string (``dial_frames``) into the call's pipeline as Pipecat ``OutputDTMFFrame``s, behind what
the agent is saying. Pipecat's output transport plays them as in-band tones where the ingress
has no native DTMF (Twilio media streams, WebRTC) and natively where it has (LiveKit's
``publish_dtmf``). A ``w`` is a half-second pause, as in Twilio's ``sendDigits``: silence
queued the same way, so it holds the next digit back on every ingress alike.
"""

from __future__ import annotations

from typing import Literal

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import Frame, OutputAudioRawFrame, OutputDTMFFrame

PAUSE_SECS = 0.5
_PAUSE_RATE = 8000  # the output transport resamples it to its own rate
_PAUSE = bytes(2 * int(_PAUSE_RATE * PAUSE_SECS))

Source = Literal["intent", "llm"]


def dial_frames(digits: str) -> list[Frame]:
    """The frames that play ``digits`` (0-9, *, # and w for a pause), in order: one frame per
    key, as LiveKit's native DTMF sends only the first key of a frame."""
    return [
        OutputAudioRawFrame(audio=_PAUSE, sample_rate=_PAUSE_RATE, num_channels=1)
        if key == "w"
        else OutputDTMFFrame(button=KeypadEntry(key))
        for key in digits
    ]
