"""Ctrl-C on ``switchboard up`` after a browser offer that never connected stops the worker at once.

Ctrl-C reaches every process of the terminal's group: the worker gets SIGINT, then the
supervisor's SIGTERM. That is one request to drain; the browser call nobody connected to is
not a live call worth waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from conftest import SERVER_ENV, free_port, wait_for
from phone_stack import start_stack
from switchboard.cli import LOCAL_NUMBER
from switchboard.loadtest.sip_phone import shared_line
from switchboard.telephony import livekit_local as local

STOP_LIMIT_SECS = 10.0  # the drain deadline is 30 s and the connect timeout 10 s: below both


async def test_sigint_then_sigterm_stops_a_worker_holding_an_unconnected_browser_call() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="sb-shutdown-"))
    stack = start_stack(data_dir, max_calls=2)
    try:
        wait_for(
            lambda: httpx.get(f"{stack.url}/health", timeout=2).status_code == 200,
            30,
            what="pool ready",
        )
        pc = RTCPeerConnection()
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(timeout=15) as client:
            reply = await client.post(
                f"{stack.url}/webrtc/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}
            )
        await pc.close()  # the browser never connects
        assert reply.status_code == 200, reply.text

        worker = stack.worker.process
        started = time.monotonic()
        worker.send_signal(signal.SIGINT)
        wait_for(lambda: "draining before exit" in stack.worker.log(), 5, what="drain started")
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=STOP_LIMIT_SECS + 5)
        elapsed = time.monotonic() - started
        log = stack.worker.log()
        assert elapsed < STOP_LIMIT_SECS, f"worker took {elapsed:.1f} s to stop\n{log[-3000:]}"
        assert "exiting without waiting for calls" not in log  # SIGTERM did not force the exit
        assert "drained and deregistered" in log
        assert "Traceback" not in log, log[-3000:]
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_ctrl_c_on_switchboard_up_stops_everything_promptly(tmp_path: Path) -> None:
    """``switchboard up --livekit`` (plain ``up`` where LiveKit is not built): a browser call's
    offer and, with LiveKit, a SIP call answered with the greeting; then Ctrl-C stops it all
    (a LiveKit process left running fails the module: tests/process_guard.py)."""
    port, redis_port, sip_port = free_port(), free_port(), free_port()
    livekit = not local.binaries_missing()
    env = {
        **os.environ,
        "SWITCHBOARD_PORT": str(port),
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SWITCHBOARD_INFERENCE_THREADS": "1",
        "SWITCHBOARD_LOG_LEVEL": "INFO",
        "SWITCHBOARD_TTS_CACHE_DIR": SERVER_ENV["SWITCHBOARD_TTS_CACHE_DIR"],
        "SWITCHBOARD_LIVEKIT_PORT": str(free_port()),
        "SWITCHBOARD_LIVEKIT_SIP_PORT": str(sip_port),
    }
    if os.environ.get("CI") and not livekit:
        raise AssertionError("LiveKit is not built: make setup builds it (scripts/install_livekit.sh)")
    up, log_path = _start_up(env, tmp_path, livekit=livekit)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(base), 120, 0.5, "switchboard up ready")
        async with httpx.AsyncClient(timeout=15) as client:
            for _ in range(30):  # the orchestrator is up before the worker takes offers
                pc = RTCPeerConnection()
                pc.addTrack(AudioStreamTrack())
                await pc.setLocalDescription(await pc.createOffer())
                reply = await client.post(
                    f"{base}/webrtc/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}
                )
                await pc.close()
                if reply.status_code == 200:
                    break
                await asyncio.sleep(1)
        assert reply.status_code == 200, reply.text
        if livekit:
            _sip_call_is_greeted(f"sip:{LOCAL_NUMBER}@127.0.0.1:{sip_port}")
        started = time.monotonic()
        os.killpg(up.pid, signal.SIGINT)
        up.wait(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        # The whole group: a child the supervisor failed to stop outlives it otherwise.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    log = log_path.read_text(errors="replace")
    assert elapsed < STOP_LIMIT_SECS, f"switchboard up took {elapsed:.1f} s to stop\n{log[-3000:]}"
    assert "did not stop in time" not in log
    assert "Connection refused" not in log, "Redis stopped before the workers had drained"
    assert "Switchboard stopped" in log
    if livekit:
        assert f"LiveKit SIP on udp/tcp 127.0.0.1:{sip_port}" in log, log[-3000:]


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _sip_call_is_greeted(uri: str) -> None:
    phone = shared_line().phone("+15105550123", free_port())
    call = phone.call(uri)
    try:
        call.wait_confirmed(60)  # LiveKit SIP answers once the agent is in the room
        call.wait_for_sound(call.confirmed_at or 0, 20)
    finally:
        call.hang_up()
    call.wait_ended(10)


def _start_up(
    env: dict[str, str], tmp_path: Path, *, livekit: bool
) -> tuple[subprocess.Popen, Path]:
    log_path = tmp_path / "up.log"
    with open(log_path, "w") as log:
        # A session of its own stands for the terminal: Ctrl-C signals the whole group.
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "switchboard.cli",
                "up",
                "--workers",
                "1",
                "--data-dir",
                str(tmp_path / "var"),
                *(["--livekit"] if livekit else []),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return up, log_path
