"""Browser calls hold a pool slot only once their peer connection is up.

A real orchestrator and worker on a fresh Redis; the browser is an aiortc peer on loopback.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from conftest import OPERATOR, wait_for
from phone_stack import PhoneStack, start_stack

CONNECT_TIMEOUT_SECS = 3.0
BROWSER_CAP = 2


@pytest.fixture(scope="module")
def stack() -> Iterator[PhoneStack]:
    data_dir = Path(tempfile.mkdtemp(prefix="sb-webrtc-slots-"))
    env = {
        "SWITCHBOARD_WEBRTC_CONNECT_TIMEOUT_SECS": str(CONNECT_TIMEOUT_SECS),
        "SWITCHBOARD_WEBRTC_MAX_CALLS": str(BROWSER_CAP),
        "SWITCHBOARD_RATE_LIMIT_WEBRTC": "1000/minute",
    }
    stack = start_stack(data_dir, max_calls=2, env=env)
    wait_for(
        lambda: httpx.get(f"{stack.url}/health", timeout=2).status_code == 200,
        30,
        what="pool ready",
    )
    yield stack
    stack.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


async def offer_sdp() -> tuple[RTCPeerConnection, str]:
    """A real audio offer with its ICE candidates, from a peer that may never connect."""
    pc = RTCPeerConnection()
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def post_offer(client: httpx.AsyncClient, url: str, sdp: str) -> httpx.Response:
    return await client.post(f"{url}/webrtc/offer", json={"sdp": sdp, "type": "offer"})


async def stats(client: httpx.AsyncClient, url: str) -> dict:
    return (await client.get(f"{url}/stats", headers=OPERATOR)).json()


async def test_a_bogus_offer_gets_400_at_once_and_holds_nothing(stack: PhoneStack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        replies = [
            await post_offer(client, stack.url, sdp)
            for sdp in ("v=0", "hello", "v=0\r\nm=audio 9 UDP 0\r\n")
        ]
        elapsed = time.monotonic() - started
        assert [r.status_code for r in replies] == [400, 400, 400]
        assert [r.json()["error"].split(":")[0] for r in replies] == ["sdp"] * 3
        assert "m=audio" in replies[0].json()["error"] and "ICE" in replies[2].json()["error"]
        assert elapsed < 1.0
        assert (await stats(client, stack.url))["active_calls"] == 0


async def test_offers_that_never_connect_leave_phone_calls_their_slots(stack: PhoneStack) -> None:
    peers = [await offer_sdp() for _ in range(8)]
    async with httpx.AsyncClient(timeout=15) as client:
        replies = [await post_offer(client, stack.url, sdp) for _pc, sdp in peers]
        for pc, _sdp in peers:
            await pc.close()  # the "browser" goes away without ever connecting
        statuses = [r.status_code for r in replies]
        assert statuses.count(200) == BROWSER_CAP, statuses  # the worker's browser cap
        assert statuses.count(503) == 8 - BROWSER_CAP, statuses
        assert (await stats(client, stack.url))["active_calls"] == 0  # no pool slot held

        phone = await client.post(
            f"{stack.url}/twilio/voice", data={"CallSid": "CAphone", "From": "+15005550006"}
        )
        assert phone.status_code == 200 and "<Stream" in phone.text, phone.text

        # Once the connect timeout passes, the browser cap is free again.
        deadline = time.monotonic() + CONNECT_TIMEOUT_SECS + 10
        while True:
            pc, sdp = await offer_sdp()
            reply = await post_offer(client, stack.url, sdp)
            await pc.close()
            if reply.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)  # polling the cap; each try is a real offer
        assert reply.status_code == 200, reply.text


async def test_a_connected_browser_call_holds_a_slot_until_it_hangs_up(stack: PhoneStack) -> None:
    async with httpx.AsyncClient(timeout=15) as client:

        async def idle() -> bool:
            return (await stats(client, stack.url))["active_calls"] == 0

        await _until(idle, 20, "pool idle")  # the phone reservation of the previous test expires
        pc, sdp = await offer_sdp()
        reply = await post_offer(client, stack.url, sdp)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

        async def holding() -> bool:
            return (
                pc.connectionState == "connected"
                and (await stats(client, stack.url))["active_calls"] == 1
            )

        await _until(holding, 15, "connected call holds one slot")
        await pc.close()
        await _until(idle, 15, "slot freed after hang-up")


async def _until(condition, limit_secs: float, what: str) -> None:
    deadline = time.monotonic() + limit_secs
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {limit_secs} s")
        await asyncio.sleep(0.1)
