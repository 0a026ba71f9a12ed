"""Ctrl-C on ``switchboard up`` after a browser offer that never connected stops the worker at once.

Ctrl-C reaches every process of the terminal's group: the worker gets SIGINT, then the
supervisor's SIGTERM. That is one request to drain; the browser call nobody connected to is
not a live call worth waiting for.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from conftest import wait_for
from phone_stack import start_stack

STOP_LIMIT_SECS = 10.0  # the drain deadline is 30 s and the connect timeout 20 s: far below both


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
