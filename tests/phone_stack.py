"""Headless Chromium for the browser-page tests, and pools of their own for tests that stop
or reconfigure one (the page tests use conftest's shared stack); each module has its own browser.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import REPO, SPEECH_DIR, ServerGroup, Stack, stack_env, start_redis
from conftest import start_orchestrator as start_cli_orchestrator
from conftest import start_worker as start_cli_worker

PhoneStack = Stack  # a stack of the test's own is the same shape as the shared one

ARTIFACTS = REPO / ".pytest_cache" / "artifacts"
CHROMIUM = Path(os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # Chromium refuses to run as root otherwise
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
# "go forward ten meters": wideband, and three words of the "directions" intent. The 8 kHz
# Harvard sentences ("birch canoe...") come through Opus and Whisper tiny misheard in about
# a third of the runs ("birch can be used lid").
SPEECH_CLIP = "pocketsphinx_goforward_16k.wav"
CLIP_LEAD_SECS = 5.0  # connecting plus the greeting (about 3 s) are over before the caller speaks
CLIP_TAIL_SECS = 1.0
FAKE_MIC_RATE = 48000


def start_stack(data_dir: Path, max_calls: int = 1, env: dict[str, str] | None = None) -> Stack:
    """A pool of its own for a test that changes its settings or stops it: one worker with
    ``max_calls`` slots behind one orchestrator, on a fresh Redis; ``env`` adds settings to both."""
    with ServerGroup() as group:
        redis = group.add(start_redis(data_dir))
        env = {**stack_env(redis.url), **(env or {})}
        orchestrator = group.add(start_cli_orchestrator(redis.url, env))
        worker = group.add(start_cli_worker(redis.url, "web-w1", max_calls=max_calls, env=env))
        stack = Stack(redis, orchestrator, worker)
        group.release()  # started: the caller stops it
    return stack


def fake_mic_wav(path: Path) -> Path:
    """The speech clip as Chromium's fake microphone wants it: 48 kHz mono 16-bit, padded."""
    audio, rate = sf.read(SPEECH_DIR / SPEECH_CLIP, dtype="float32")
    audio = soxr.resample(audio, rate, FAKE_MIC_RATE)
    lead = np.zeros(int(CLIP_LEAD_SECS * FAKE_MIC_RATE), dtype=np.float32)
    tail = np.zeros(int(CLIP_TAIL_SECS * FAKE_MIC_RATE), dtype=np.float32)
    sf.write(path, np.concatenate([lead, audio, tail]), FAKE_MIC_RATE, subtype="PCM_16")
    return path


def artifact_path(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def screenshot(page, name: str, request: pytest.FixtureRequest) -> Path:
    """Save a full-page screenshot as a test artifact and print its path, even under capture."""
    path = artifact_path(name)
    page.screenshot(path=path, full_page=True)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nscreenshot: {path}")
    return path


def module_browser(request: pytest.FixtureRequest):
    """Headless Debian Chromium whose microphone plays the speech clip once per call.

    Playwright's sync API runs its own event loop on this thread while it is started, which
    pytest-asyncio's session loop cannot share: it is stopped when the test module ends.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    wav = fake_mic_wav(artifact_path("fake-mic-48k.wav"))
    playwright = sync_api.sync_playwright().start()
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}%noloop"],
    )
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()
