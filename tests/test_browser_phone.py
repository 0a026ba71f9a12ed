"""The browser phone end to end: headless Chromium, whose microphone plays real speech, calls an
agent through the orchestrator, Redis and a worker over WebRTC."""

from __future__ import annotations

import re

import pytest

from conftest import wait_for
from phone_stack import PhoneStack, module_browser, screenshot

expect = pytest.importorskip("playwright.sync_api").expect
REPLY = "Moving forward now."  # tests/agents/speech_clips.yaml, intent "directions"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def stack(shared_stack: PhoneStack) -> PhoneStack:
    return shared_stack


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest):
    yield from module_browser(request)


@pytest.fixture
def page(browser, stack: PhoneStack):
    page = browser.new_page(viewport=DESKTOP)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    yield page
    page.close()
    # Shown only when the test failed.
    print("--- browser console ---", *console, stack.logs(), sep="\n")


def test_call_shows_the_agents_reply_and_the_turn_latency_then_hangs_up(
    page, stack: PhoneStack, request: pytest.FixtureRequest
) -> None:
    page.goto(stack.url)
    page.get_by_role("button", name="Call").click()
    expect(page.locator("body")).to_have_attribute("data-call-state", "connected", timeout=20_000)
    assert page.locator("body").get_attribute("data-call-id").startswith("call-webrtc-")

    reply = page.locator("#transcript li.agent", has_text=REPLY)
    expect(reply).to_be_visible(timeout=45_000)
    expect(page.locator("#transcript li.user").first).to_contain_text(
        re.compile("forward|meters", re.I)
    )
    latency = page.locator("#latency li").first
    expect(latency).to_contain_text(re.compile(r"Turn 1: \d+ ms"), timeout=10_000)
    latency_ms = int(re.search(r"Turn 1: (\d+) ms", latency.inner_text()).group(1))
    assert 0 < latency_ms < 5000
    expect(reply.locator(".badge")).to_have_text(f"{latency_ms} ms")
    assert stack.stats()["active_calls"] == 1

    screenshot(page, "browser-phone.png", request)

    page.get_by_role("button", name="Hang up").click()
    expect(page.locator("#status")).to_have_text("You hung up.")
    expect(page.get_by_role("button", name="Call")).to_be_visible()
    stats = wait_for(
        lambda: (s := stack.stats())["active_calls"] == 0 and s,
        limit_secs=10,
        what="the call's slot freed",
    )
    assert stats["turn_latency_ms"]["count"] >= 1, (
        "the worker did not record the call's turn latency"
    )

    page.set_viewport_size(PHONE)
    screenshot(page, "browser-phone-narrow.png", request)


def test_a_denied_microphone_is_explained_and_no_call_is_placed(page, stack: PhoneStack) -> None:
    # Chromium's fake media UI always grants access, so deny it the way a browser does.
    page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    offers: list[str] = []
    page.on(
        "request",
        lambda request: offers.append(request.url) if "/webrtc/offer" in request.url else None,
    )
    page.goto(stack.url)
    page.get_by_role("button", name="Call").click()
    expect(page.get_by_role("alert")).to_contain_text("Microphone access was denied")
    expect(page.get_by_role("button", name="Call")).to_be_enabled()
    assert offers == []
