"""Redis, an orchestrator, one worker and headless Chromium for the browser-page tests.

Both page tests share one stack (started on first use, stopped at the end of the session);
each test module has its own browser.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import (
    OPERATOR,
    REPO,
    SPEECH_DIR,
    RedisServer,
    Server,
    start_redis,
)
from conftest import start_orchestrator as start_cli_orchestrator
from conftest import start_worker as start_cli_worker

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


@dataclass
class PhoneStack:
    redis: RedisServer
    orchestrator: Server
    worker: Server

    @property
    def url(self) -> str:
        return self.orchestrator.base_url

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", headers=OPERATOR, timeout=5).json()

    def logs(self) -> str:
        return f"--- orchestrator ---\n{self.orchestrator.log()[-4000:]}\n--- worker ---\n{self.worker.log()[-8000:]}"

    def stop(self) -> None:
        self.worker.stop()
        self.orchestrator.stop()
        self.redis.stop()


def start_stack(data_dir: Path, max_calls: int = 1, env: dict[str, str] | None = None) -> PhoneStack:
    """One worker with ``max_calls`` slots behind one orchestrator, on a fresh Redis; ``env``
    adds settings to both."""
    redis = start_redis(data_dir)
    # DEBUG would log every RTP packet aiortc sends and receives.
    env = {
        "SWITCHBOARD_REDIS_URL": redis.url,
        "SWITCHBOARD_INFERENCE_THREADS": "1",
        "SWITCHBOARD_LOG_LEVEL": "INFO",
        **(env or {}),
    }
    servers: list[Server] = []
    try:
        servers.append(start_cli_orchestrator(redis.url, env))
        servers.append(start_cli_worker(redis.url, "web-w1", max_calls=max_calls, env=env))
    except Exception:
        for server in servers:
            server.stop()
        redis.stop()
        raise
    return PhoneStack(redis, *servers)


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


# One stack and one browser for the whole session, whichever page test asks first.
_shared: dict[str, object] = {}


def shared_stack(request: pytest.FixtureRequest) -> PhoneStack:
    if "stack" not in _shared:
        data_dir = Path(tempfile.mkdtemp(prefix="sb-phone-redis-"))
        stack = start_stack(data_dir)
        _shared["stack"] = stack

        def stop() -> None:
            stack.stop()
            shutil.rmtree(data_dir, ignore_errors=True)

        request.session.config.add_cleanup(stop)
    return _shared["stack"]  # type: ignore[return-value]


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
