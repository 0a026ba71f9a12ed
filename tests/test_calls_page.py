"""The Calls page in headless Chromium: it asks for the API key, lists the history, and for a
call shows the transcript beside a playing recording, the per-turn latency plot and the gaps
the analyzer finds in the recording."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import API_KEY, SPEECH_DIR, Server, start_orchestrator, start_redis, wait_for
from phone_stack import PhoneStack, module_browser, screenshot
from switchboard.call_log import Turn
from switchboard.orchestrator.calls_api import analyze_flac
from switchboard.records.models import (
    CallAnalysis,
    RecordingRef,
    StoredCall,
    TranscriptEntry,
)
from switchboard.records.storage import LocalRecordingStorage
from switchboard.records.store import CallStore

expect = pytest.importorskip("playwright.sync_api").expect
RATE = 16000
CALL_ID = "call-CApage0001"
# (side, clip, start second): two caller turns, each answered by the "agent".
LAYOUT = [
    ("caller", "pocketsphinx_cards_003_16k.wav", 0.5),
    ("agent", "cmu_arctic_aew_a0001_16k.wav", 2.7),
    ("caller", "pocketsphinx_cards_001_16k.wav", 7.0),
    ("agent", "cmu_arctic_aew_a0002_16k.wav", 8.9),
]
TURNS = [
    Turn(
        transcript="seven of clubs",
        vad_stop_ms=200,
        transcript_ms=280,
        turn_end_ms=310,
        first_tts_audio_ms=420,
        bot_started_ms=450,
    ),
    Turn(
        transcript="ten of clubs",
        vad_stop_ms=200,
        transcript_ms=350,
        turn_end_ms=520,
        first_tts_audio_ms=690,
        bot_started_ms=720,
    ),
]


def recording() -> bytes:
    """A real two-sided conversation: speech clips laid out on the caller and agent channels."""
    stereo = np.zeros((14 * RATE, 2), dtype=np.int16)
    for side, clip, start in LAYOUT:
        audio, rate = sf.read(SPEECH_DIR / clip, dtype="int16")
        if rate != RATE:
            audio = soxr.resample(audio, rate, RATE).astype(np.int16)
        at = int(start * RATE)
        stereo[at : at + audio.size, 0 if side == "caller" else 1] = audio
    buffer = io.BytesIO()
    sf.write(buffer, stereo, RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def stored_calls(audio: bytes) -> list[tuple[StoredCall, bytes | None]]:
    now = dt.datetime.now(dt.UTC)
    recorded = StoredCall(
        call_id=CALL_ID,
        call_sid="CApage0001",
        from_number="+15105550100",
        to_number="+18005550199",
        agent="receptionist",
        ingress="twilio",
        started_at=now - dt.timedelta(minutes=5),
        ended_at=now - dt.timedelta(minutes=5) + dt.timedelta(seconds=14),
        outcome="completed",
        transcript=[
            TranscriptEntry(
                role="agent", text="This call may be recorded. Hello, how can I help?", t=0.0
            ),
            TranscriptEntry(role="user", text="Seven of clubs.", t=2.1),
            TranscriptEntry(role="agent", text="You asked about playing cards.", t=2.7),
            TranscriptEntry(role="user", text="Ten of clubs.", t=8.2),
            TranscriptEntry(role="agent", text="You asked about playing cards.", t=8.9),
        ],
        turns=TURNS,
        intents=["cards", "cards"],
        analysis=CallAnalysis(
            summary="The caller named two cards.",
            success=True,
            reasons="Both were answered.",
            model="m",
        ),
        recording=RecordingRef(
            key=f"{now:%Y/%m/%d}/{CALL_ID}.flac",
            sample_rate=RATE,
            duration_secs=14.0,
            bytes=len(audio),
        ),
    )
    others = [
        (
            StoredCall(
                call_id=f"call-CAold{i}",
                agent="receptionist",
                ingress="webrtc",
                outcome="failed",
                started_at=now - dt.timedelta(hours=i + 1),
                failure_reason="RuntimeError: boom",
            ),
            None,
        )
        for i in range(3)
    ]
    return [(recorded, audio), *others]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("calls-page")
    env = {
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{base}/switchboard.db",
        "SWITCHBOARD_RECORDINGS_URL": str(base / "rec"),
    }

    async def populate() -> None:
        store = CallStore(env["SWITCHBOARD_DATABASE_URL"], LocalRecordingStorage(base / "rec"))
        await store.open()
        for call, audio in stored_calls(recording()):
            await store.save(call, audio)
        await store.close()

    # Playwright's sync API may already run an event loop on this thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, populate()).result()
    redis = start_redis(tmp_path_factory.mktemp("calls-page-redis"))
    orchestrator = start_orchestrator(redis.url, env)
    yield orchestrator
    orchestrator.stop()
    redis.stop()


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest):
    yield from module_browser(request)


def test_the_calls_page_plays_a_recording_beside_its_transcript_latency_and_gaps(
    browser, history: Server, request: pytest.FixtureRequest
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{history.base_url}/history")

    expect(page.get_by_label("API key")).to_be_visible()
    page.get_by_label("API key").fill("not-the-key")
    page.get_by_role("button", name="Show calls").click()
    expect(page.get_by_role("alert")).to_contain_text("refused the key")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Show calls").click()

    rows = page.locator("#calls tr")
    expect(rows).to_have_count(4)
    expect(page.get_by_label("API key")).to_be_hidden()
    expect(page.locator("#call-count")).to_have_text("(4)")
    assert page.evaluate("() => sessionStorage.getItem('switchboard.apiKey')") == API_KEY
    page.locator(f"#calls tr[data-call-id='{CALL_ID}']").click()

    expect(page.locator("#transcript li")).to_have_count(5)
    expect(page.locator("#analysis")).to_have_text(
        "Successful. The caller named two cards. Both were answered."
    )
    expect(page.locator("#transcript li.user").first).to_contain_text("Seven of clubs.")
    expect(page.locator("#transcript li.agent").first).to_contain_text("may be recorded")
    bars = page.locator("#latency-plot g.turn")
    expect(bars).to_have_count(2)
    expect(bars.nth(0).locator("rect")).to_have_count(3)
    expect(bars.nth(1)).to_contain_text("720")
    expect(page.locator("#latency-plot line.target")).to_have_count(1)

    gaps = [g for g in analyze_flac(recording()).gaps if g.gap_ms is not None]
    assert len(gaps) == 2
    gap_rows = page.locator("#gaps tr")
    expect(gap_rows).to_have_count(2)
    for row, gap in zip(range(2), gaps, strict=True):
        expect(gap_rows.nth(row)).to_contain_text(f"{round(gap.gap_ms)} ms")
    expect(page.locator("#talk")).to_contain_text("Talk: caller")

    player = page.locator("#player")
    expect(player).to_be_visible()
    page.wait_for_function(
        "() => document.getElementById('player').readyState >= 1", timeout=10_000
    )
    assert abs(page.evaluate("() => document.getElementById('player').duration") - 14.0) < 0.1
    page.evaluate("() => document.getElementById('player').play()")
    page.wait_for_function(
        "() => document.getElementById('player').currentTime > 0.5", timeout=10_000
    )
    assert page.evaluate("() => document.getElementById('player').paused") is False
    screenshot(page, "calls-page.png", request)

    # A transcript line seeks the recording to when it was said.
    page.locator("#transcript li.user").nth(1).get_by_role("button").click()
    page.wait_for_function(
        "() => document.getElementById('player').currentTime >= 8.2", timeout=5_000
    )

    # The key stays for this tab: a reload goes straight back to the call.
    page.reload()
    expect(page.locator("#detail-h")).to_have_text(f"Call {CALL_ID}")
    expect(page.get_by_label("API key")).to_be_hidden()
    page.get_by_role("button", name="Forget key").click()
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.locator("#list-card")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.getItem('switchboard.apiKey')") is None
    context.close()


def test_the_calls_page_filters_failed_calls(browser, history: Server) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{history.base_url}/history")
    page.evaluate(f"() => sessionStorage.setItem('switchboard.apiKey', '{API_KEY}')")
    page.reload()
    expect(page.locator("#calls tr")).to_have_count(4)
    page.locator("#f-outcome").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#calls tr")).to_have_count(3)
    page.locator("#calls tr").first.click()
    expect(page.locator("#detail-meta")).to_contain_text("RuntimeError: boom")
    expect(page.locator("#no-recording")).to_be_visible()
    context.close()


def test_a_browser_call_appears_on_the_calls_page_with_what_was_said(
    browser, shared_stack: PhoneStack, request: pytest.FixtureRequest
) -> None:
    stack = shared_stack
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    phone = context.new_page()
    phone.goto(stack.url)
    phone.get_by_role("button", name="Call").click()
    expect(phone.locator("body")).to_have_attribute("data-call-state", "connected", timeout=20_000)
    call_id = phone.locator("body").get_attribute("data-call-id")
    expect(phone.locator("#transcript li.agent", has_text="Moving forward now.")).to_be_visible(
        timeout=45_000
    )
    phone.get_by_role("button", name="Hang up").click()
    expect(phone.get_by_role("button", name="Call")).to_be_visible()

    # The worker writes the record just after the call ends.
    wait_for(
        lambda: (
            httpx.get(f"{stack.url}/calls/{call_id}", headers={"X-API-Key": API_KEY}, timeout=5)
            .json()
            .get("transcript")
        ),
        limit_secs=15,
        what="the browser call's record saved",
    )
    page = context.new_page()
    page.goto(f"{stack.url}/history#{call_id}")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Show calls").click()
    expect(page.locator("#detail-h")).to_have_text(f"Call {call_id}")
    expect(page.locator("#detail-meta")).to_contain_text("webrtc")
    expect(page.locator("#transcript li.user").first).to_contain_text(
        re.compile("forward|meters", re.I)
    )
    expect(page.locator("#transcript li.agent", has_text="Moving forward now.")).to_have_count(1)
    expect(page.locator("#latency-plot g.turn")).to_have_count(1)
    expect(page.locator("#no-recording")).to_be_visible()  # the test agent does not record
    context.close()


def test_the_page_itself_holds_no_call_data(history: Server) -> None:
    html = httpx.get(f"{history.base_url}/history", timeout=5).text
    assert "call-CA" not in html and "+1510" not in html
