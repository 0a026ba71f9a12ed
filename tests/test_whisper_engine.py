"""The shared Whisper engine transcribes real narrowband speech."""

import pytest

from switchboard.audio import TELEPHONY_RATE, read_wav, resample, ulaw_decode, ulaw_encode
from switchboard.engines.whisper import shared_whisper
from switchboard.loadtest.clarity import word_accuracy


@pytest.mark.parametrize(
    "name", ["osr_us_0010_s02_8k.wav", "fw_stereo_right_16k.wav", "cmu_arctic_aew_a0003_16k.wav"]
)
async def test_transcribes_speech_after_the_phone_line(speech_clips, name) -> None:
    clip = speech_clips[name]
    # Through the same path a caller's voice takes: 8 kHz µ-law, then up to 16 kHz.
    phone = ulaw_decode(ulaw_encode(read_wav(clip.path, TELEPHONY_RATE)))
    transcript = await shared_whisper().transcribe_async(resample(phone, TELEPHONY_RATE, 16000).astype("float32") / 32768)
    assert word_accuracy(clip.transcript, transcript.text) >= 0.7, transcript.text


def test_word_accuracy_counts_errors() -> None:
    assert word_accuracy("one two three four", "one two three four") == 1.0
    assert word_accuracy("one two three four", "one three four") == 0.75
    assert word_accuracy("a b", "x y z w") == 0.0
