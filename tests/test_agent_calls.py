"""End to end: simulated Twilio calls with real human speech against a real offline agent.

What the agent said is read from the call's stored record; the first test also transcribes the
greeting the caller heard (the one place here where hearing the audio is the point).
"""

import httpx
import pytest

from conftest import API_KEY, REPLIES, Clip, agent_lines, event_names, metric, stored_call
from switchboard.agent.intents import normalize
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.line_noise import write_line_noises
from switchboard.loadtest.report import CallOutcome, format_summary


def said(text: str | None, *words: str) -> bool:
    heard = normalize(text or "")
    return all(w in heard for w in words)


async def agent_record(agent_url: str, call_sid: str) -> dict:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{agent_url}/calls/{call_sid}", headers={"X-API-Key": API_KEY})
    response.raise_for_status()
    return response.json()


async def test_agent_answers_each_turn_with_the_matching_intent(agent_url: str, speech_clips: dict[str, Clip]) -> None:
    script = CallScript(
        turns=[
            CallerTurn(audio=speech_clips["osr_us_0010_s01_8k.wav"].path),  # "...birch canoe..."
            CallerTurn(audio=speech_clips["osr_us_0010_s05_8k.wav"].path),  # "Rice is often served..."
            CallerTurn(audio=speech_clips["pocketsphinx_cards_003_16k.wav"].path),  # "seven of clubs"
            CallerTurn(audio=speech_clips["fw_stereo_right_16k.wav"].path, hangup_expected=True),  # "...horizon..."
        ]
    )
    result = await run_call(agent_url, script, transcribe=True)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.AGENT_HUNG_UP, summary
    assert said(result.greeting.transcript, "test", "line"), summary  # heard, through μ-law
    assert all(t.voice_to_voice_ms is not None and t.voice_to_voice_ms > 0 for t in result.turns), summary
    stored = await stored_call(result.call_sid)
    intents = ["boats", "food", "cards", "goodbye"]
    assert agent_lines(stored)[1:] == [REPLIES[i] for i in intents], stored.transcript

    record = await agent_record(agent_url, result.call_sid)
    assert record["intents"] == ["boats", "food", "cards", "goodbye"]
    assert record["marks_played"], "Twilio marks were never sent or never echoed"
    assert len(record["turns"]) == 4 and all(t["bot_started_ms"] for t in record["turns"])


async def test_barge_in_stops_the_agent_and_clears_twilios_buffer(agent_url: str, speech_clips: dict[str, Clip]) -> None:
    # Talk over the greeting 800 ms after it starts; then the agent must answer the barge-in.
    script = CallScript(
        turns=[CallerTurn(audio=speech_clips["osr_us_0010_s04_8k.wav"].path, barge_in_after_ms=800)]
    )
    result = await run_call(agent_url, script, transcribe=False)
    summary = format_summary(result)
    turn = result.turns[0]
    assert turn.agent_talking_at_barge_in, summary
    assert turn.clear_received, summary
    assert turn.barge_in_ok, summary
    assert turn.agent_stopped_ms is not None and turn.agent_stopped_ms < 1000, summary
    assert turn.agent_audio_start_s is not None, summary  # the answer was played after the cut
    stored = await stored_call(result.call_sid)
    assert "interrupted" in event_names(stored), stored.events
    assert agent_lines(stored)[1:] == [REPLIES["food"]], stored.transcript


@pytest.mark.parametrize("noise", ["hiss_-50dBFS", "breath_-38dBFS", "cough_-22dBFS"])
async def test_line_noise_alone_never_interrupts_the_agent(agent_url: str, noise: str, tmp_path) -> None:
    # Noise 600 ms into the greeting: the agent must neither clear Twilio's buffer nor stop.
    clip = write_line_noises(tmp_path)[noise]
    script = CallScript(turns=[CallerTurn(audio=clip, barge_in_after_ms=600)], reply_timeout_ms=2000)
    result = await run_call(agent_url, script, transcribe=False)
    summary = format_summary(result)
    assert result.clear_times_s == [], summary
    # The whole greeting was played (3.0 s; its first sentence alone is 1.9 s).
    assert result.greeting is not None and (result.greeting.duration_s or 0) > 2.5, summary
    stored = await stored_call(result.call_sid)
    assert "interrupted" not in event_names(stored), stored.events
    assert agent_lines(stored) == ["Hello, this is the test line. Please say something."], stored.transcript


async def test_an_unknown_event_is_counted_and_ignored_and_the_call_goes_on(
    agent_url: str, speech_clips: dict[str, Clip]
) -> None:
    # Malformed messages close the socket (tests/test_media_fuzz.py); an event we do not know
    # may be one Twilio added, so it is only counted.
    before = metric(agent_url, "telephony_bad_messages_total", provider="twilio")
    script = CallScript(
        turns=[CallerTurn(audio=speech_clips["osr_us_0010_s01_8k.wav"].path)],
        raw_messages_after_start=['{"event": "surprise", "streamSid": "MZ0"}'] * 3,
    )
    result = await run_call(agent_url, script, transcribe=False)
    summary = format_summary(result)
    assert result.outcome == CallOutcome.COMPLETED, summary
    assert result.turns[0].agent_audio_start_s is not None, summary
    assert agent_lines(await stored_call(result.call_sid))[1:] == [REPLIES["boats"]]
    assert metric(agent_url, "telephony_bad_messages_total", provider="twilio") - before == 3
