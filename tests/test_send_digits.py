"""The frames an agent's dial string becomes (the end-to-end test hears them as tones)."""

import pytest
from pipecat.frames.frames import OutputAudioRawFrame, OutputDTMFFrame

from switchboard.call.conversation.send_digits import PAUSE_SECS, dial_frames


def test_every_key_is_its_own_frame() -> None:
    # Pipecat's LiveKit output sends natively only the first key of a DTMF frame
    # (livekit-rtc is not installed here, so its transport cannot be run in this test).
    frames = [f for f in dial_frames("12w*0#") if isinstance(f, OutputDTMFFrame)]
    assert [f.to_string() for f in frames] == ["1", "2", "*", "0", "#"]


def test_a_w_is_half_a_second_of_silence_in_its_place() -> None:
    frames = dial_frames("1w2")
    assert [type(f) for f in frames] == [OutputDTMFFrame, OutputAudioRawFrame, OutputDTMFFrame]
    pause = frames[1]
    assert isinstance(pause, OutputAudioRawFrame)
    assert pause.num_frames / pause.sample_rate == pytest.approx(PAUSE_SECS)
    assert not any(pause.audio)
