"""The operations page follows the pool by itself: a browser call shows up as a live call and
as load on its worker, a caller who finds no free agent is told so, and hanging up clears it."""

from __future__ import annotations

import pytest

from conftest import API_KEY
from phone_stack import PhoneStack, module_browser, screenshot

expect = pytest.importorskip("playwright.sync_api").expect
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
REFRESH_LIMIT_MS = 10_000  # the page polls every 2 s


@pytest.fixture(scope="module")
def stack(shared_stack: PhoneStack) -> PhoneStack:
    return shared_stack


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest):
    yield from module_browser(request)


@pytest.fixture
def context(browser, stack: PhoneStack):
    # The operations page is the operator's: the browser logs in with the key as the password.
    context = browser.new_context(
        viewport=DESKTOP, http_credentials={"username": "operator", "password": API_KEY}
    )
    yield context
    context.close()
    print(stack.logs())  # shown only when the test failed


def test_operations_page_shows_a_running_call_and_its_worker(
    context, stack: PhoneStack, request: pytest.FixtureRequest
) -> None:
    dashboard = context.new_page()
    dashboard.goto(f"{stack.url}/dashboard")
    worker = dashboard.locator("#workers tr[data-worker-id='web-w1']")
    expect(worker).to_contain_text("0 / 1")
    expect(worker).to_contain_text("ready")
    expect(dashboard.locator("#active-calls")).to_have_text("0")

    phone = context.new_page()
    phone.goto(stack.url)
    phone.get_by_role("button", name="Call").click()
    expect(phone.locator("body")).to_have_attribute("data-call-state", "connected", timeout=20_000)

    expect(dashboard.locator("#active-calls")).to_have_text("1", timeout=REFRESH_LIMIT_MS)
    expect(worker).to_contain_text("1 / 1")
    expect(dashboard.locator("#capacity")).to_have_text("0 / 1")
    expect(dashboard.locator("#queue-length")).to_have_text("0")

    # The only slot is taken: a second caller is told so instead of waiting.
    second = context.new_page()
    second.goto(stack.url)
    second.get_by_role("button", name="Call").click()
    expect(second.get_by_role("alert")).to_contain_text("No agent is free")
    expect(second.get_by_role("button", name="Call")).to_be_visible()

    screenshot(dashboard, "ops-page.png", request)
    dashboard.set_viewport_size(PHONE)
    screenshot(dashboard, "ops-page-narrow.png", request)

    phone.get_by_role("button", name="Hang up").click()
    expect(dashboard.locator("#active-calls")).to_have_text("0", timeout=REFRESH_LIMIT_MS)
    expect(worker).to_contain_text("0 / 1")
