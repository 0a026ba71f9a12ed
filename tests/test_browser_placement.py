"""Browser calls are placed by each worker's browser cap, and a dead offer gives its place back.

The placement script runs in-process against a real Redis; the dead-offer probe of issue 24
(offers whose browser never connects, two workers with room) runs against a real orchestrator,
two workers and a fresh Redis, the browser being an aiortc peer on loopback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from conftest import (
    OPERATOR,
    RECORDS_DIR,
    RedisServer,
    Server,
    metric,
    start_orchestrator,
    start_redis,
    start_worker,
    wait_for,
)
from switchboard.dispatch import keys
from switchboard.dispatch.models import WorkerInfo
from switchboard.dispatch.registry import WorkerRegistry

CONNECT_TIMEOUT_SECS = 2.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
async def registry(redis_server: RedisServer) -> AsyncIterator[WorkerRegistry]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    yield WorkerRegistry(client, worker_ttl_secs=300)
    await client.flushdb()
    await client.aclose()


async def _register(registry: WorkerRegistry, worker_id: str, *, capacity: int, browser_cap: int) -> None:
    now = time.time()
    await registry.register(
        WorkerInfo(
            worker_id=worker_id, media_url="http://127.0.0.1:1", capacity=capacity, webrtc_capacity=browser_cap,
            pid=os.getpid(), started_at=now, heartbeat_at=now,
        )
    )  # fmt: skip


async def test_offers_spread_over_workers_by_browser_cap_and_stop_when_every_cap_is_full(
    registry: WorkerRegistry,
) -> None:
    await _register(registry, "w1", capacity=4, browser_cap=1)
    await _register(registry, "w2", capacity=4, browser_cap=1)
    placed = [await registry.reserve_browser(f"call-{i}", 30) for i in range(3)]
    assert sorted(placed[:2]) == ["w1", "w2"], placed  # not both on the one with most free slots
    assert placed[2] is None  # both caps are full, although both workers have free pool slots


async def test_a_worker_without_a_free_pool_slot_gets_no_browser_call(registry: WorkerRegistry) -> None:
    await _register(registry, "busy", capacity=1, browser_cap=2)
    await _register(registry, "idle", capacity=1, browser_cap=2)
    assert await registry.take_slot("busy")
    assert [await registry.reserve_browser(f"call-{i}", 30) for i in range(2)] == ["idle", "idle"]


async def test_a_lapsed_hold_frees_its_place_and_a_released_one_at_once(registry: WorkerRegistry) -> None:
    await _register(registry, "w1", capacity=4, browser_cap=1)
    assert await registry.reserve_browser("call-dead", 0.2) == "w1"
    assert await registry.reserve_browser("call-next", 30) is None
    await asyncio.sleep(0.3)
    assert await registry.reserve_browser("call-next", 30) == "w1"
    await registry.release_browser("w1", "call-next")
    assert await registry.reserve_browser("call-third", 30) == "w1"


async def test_a_connected_call_keeps_its_place_until_released(registry: WorkerRegistry) -> None:
    await _register(registry, "w1", capacity=4, browser_cap=1)
    assert await registry.reserve_browser("call-live", 0.1) == "w1"
    await registry.hold_browser("w1", "call-live", float("inf"))
    await asyncio.sleep(0.2)
    assert await registry.reserve_browser("call-other", 30) is None
    assert await registry.browser_calls("w1") == 1


async def test_a_draining_or_dead_worker_gets_no_browser_call(registry: WorkerRegistry) -> None:
    await _register(registry, "w1", capacity=4, browser_cap=2)
    await registry.deregister("w1")
    assert await registry.reserve_browser("call-1", 30) is None


# --- the probe: two dead offers, two workers ---------------------------------------------


@dataclass
class TwoWorkers:
    redis: RedisServer
    orchestrator: Server
    workers: list[Server]

    @property
    def url(self) -> str:
        return self.orchestrator.base_url

    def stop(self) -> None:
        for server in [*self.workers, self.orchestrator]:
            server.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def two_workers() -> Iterator[TwoWorkers]:
    data_dir = Path(tempfile.mkdtemp(prefix="sb-browser-placement-"))
    redis = start_redis(data_dir)
    env = {
        "SWITCHBOARD_WEBRTC_MAX_CALLS": "1",
        "SWITCHBOARD_WEBRTC_CONNECT_TIMEOUT_SECS": str(CONNECT_TIMEOUT_SECS),
        "SWITCHBOARD_RATE_LIMIT_WEBRTC": "1000/minute",
        "SWITCHBOARD_LOG_LEVEL": "INFO",  # DEBUG would log every RTP packet aiortc handles
    }
    servers: list[Server] = []
    try:
        servers.append(start_orchestrator(redis.url, env))
        # One after the other: each must be healthy within its start-up limit on a busy machine.
        for i in (1, 2):
            servers.append(start_worker(redis.url, f"bp-w{i}", max_calls=4, env=env))
        stack = TwoWorkers(redis, servers[0], servers[1:])
        wait_for(
            lambda: len(httpx.get(f"{stack.url}/stats", headers=OPERATOR, timeout=2).json()["workers"]) == 2,
            30, what="two workers registered",
        )  # fmt: skip
    except Exception:
        for server in servers:
            server.stop()
        redis.stop()
        raise
    yield stack
    stack.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


async def _dead_offer(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """A real audio offer from a browser that goes away without ever connecting."""
    pc = RTCPeerConnection()
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    reply = await client.post(f"{url}/webrtc/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"})
    await pc.close()
    return reply


def _stored_call_ids() -> set[str]:
    with sqlite3.connect(RECORDS_DIR / "switchboard.db") as db:
        return {row[0] for row in db.execute("SELECT call_id FROM calls")}


def _abandoned_on(worker: Server) -> float:
    return metric(worker.base_url, "webrtc_offers_abandoned_total")


async def test_two_dead_offers_land_on_two_workers_and_give_their_places_back_unrecorded(
    two_workers: TwoWorkers,
) -> None:
    url = two_workers.url
    async with httpx.AsyncClient(timeout=15) as client:
        first, second = [await _dead_offer(client, url) for _ in range(2)]
        # Each worker takes one browser call: the second offer goes to the other worker.
        assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
        third = await _dead_offer(client, url)
        assert third.status_code == 503, third.text  # every browser cap is full
        dead = [first.json()["call_id"], second.json()["call_id"]]

        # The dead offers give their places back once the connect timeout has passed.
        started = time.monotonic()
        while (reply := await _dead_offer(client, url)).status_code != 200:
            assert time.monotonic() - started < CONNECT_TIMEOUT_SECS + 8, reply.text
            await asyncio.sleep(0.25)
        dead.append(reply.json()["call_id"])

    # Counted, but no "failed" call in the history nor in the call state.
    wait_for(lambda: sum(_abandoned_on(w) for w in two_workers.workers) >= 2, 10, what="offers counted")
    assert not set(dead) & _stored_call_ids()
    client = aioredis.Redis.from_url(two_workers.redis.url, decode_responses=True)
    try:
        statuses = [await client.hget(keys.call(call_id), "status") for call_id in dead[:2]]
    finally:
        await client.aclose()
    assert statuses == ["abandoned", "abandoned"]
