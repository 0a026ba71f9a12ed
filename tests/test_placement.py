"""Placement in-process against a real Redis: slots, reservations, draining, dead workers, and
the TwiML a placed or refused call gets (tests/test_dispatch.py runs the same through processes).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from xml.etree import ElementTree

import pytest
import redis.asyncio as aioredis

from conftest import RedisServer, start_redis
from switchboard.dispatch import stream_tokens
from switchboard.dispatch.calls import CallLedger
from switchboard.dispatch.models import WorkerInfo
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.dispatch.sessions import CallSessions
from switchboard.orchestrator.media_edge import STREAM_TOKEN_PARAM
from switchboard.orchestrator.placement import BUSY_MESSAGE, StreamPlacer
from switchboard.settings import Settings

SECRET = "placement-test-secret"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("placement-redis"))
    yield server
    server.stop()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def registry(client: aioredis.Redis) -> WorkerRegistry:
    return WorkerRegistry(client, worker_ttl_secs=30)


async def register(registry: WorkerRegistry, worker_id: str, capacity: int, draining: bool = False) -> WorkerInfo:
    now = time.time()
    info = WorkerInfo(worker_id=worker_id, media_url=f"http://{worker_id}.internal:8081", capacity=capacity,
                      pid=1, started_at=now, heartbeat_at=now, draining=draining)  # fmt: skip
    await registry.register(info)
    return info


async def loads(registry: WorkerRegistry) -> dict[str, int]:
    return {info.worker_id: load for info, load in await registry.live_workers()}


async def test_each_call_goes_to_the_worker_with_the_most_free_slots_until_none_is_left(registry) -> None:
    await register(registry, "big", 3)
    await register(registry, "small", 1)
    placed = [await registry.reserve_any(f"call-{i}", 30) for i in range(5)]
    assert placed[:2] == ["big", "big"]  # 3 free, then 2 free against 1
    assert Counter(placed[:4]) == {"big": 3, "small": 1}
    assert placed[4] is None
    assert await loads(registry) == {"big": 3, "small": 1}


async def test_calls_arriving_at_once_never_take_more_slots_than_there_are(registry) -> None:
    await register(registry, "a", 2)
    await register(registry, "b", 3)
    placed = await asyncio.gather(*(registry.reserve_any(f"call-{i}", 30) for i in range(40)))
    assert Counter(p for p in placed if p) == {"a": 2, "b": 3}
    assert await loads(registry) == {"a": 2, "b": 3}


async def test_a_draining_or_excluded_worker_is_never_chosen(registry) -> None:
    await register(registry, "leaving", 4, draining=True)
    await register(registry, "lost-on", 4)
    assert await registry.reserve_any("call-1", 30, exclude="lost-on") is None
    assert await registry.reserve_any("call-2", 30) == "lost-on"


async def test_a_reservation_whose_stream_never_came_is_given_back_at_the_next_heartbeat(registry) -> None:
    info = await register(registry, "w", 1)
    assert await registry.reserve_any("call-late", hold_secs=-1) == "w"  # lapsed at once
    assert await registry.reserve_any("call-next", 30) is None
    await registry.heartbeat(info)
    assert await loads(registry) == {"w": 0}
    assert not await registry.confirm_reservation("w", "call-late"), "a lapsed reservation is not honoured"


async def test_a_confirmed_reservation_is_a_running_call_until_its_slot_is_released(registry) -> None:
    info = await register(registry, "w", 1)
    assert await registry.reserve_any("call-1", 30) == "w"
    assert await registry.pending_reservations("w") == 1
    assert await registry.confirm_reservation("w", "call-1")
    assert await registry.pending_reservations("w") == 0
    await registry.heartbeat(info)
    assert await loads(registry) == {"w": 1}, "a running call keeps its slot through heartbeats"
    assert not await registry.take_slot("w")
    await registry.release_slot("w", "call-1")
    await registry.release_slot("w", "call-1")  # released twice: never below zero
    assert await loads(registry) == {"w": 0}
    assert await registry.take_slot("w")


async def test_a_worker_that_stops_heartbeating_is_forgotten_and_counted_once(client) -> None:
    short = WorkerRegistry(client, worker_ttl_secs=0.2)
    other_orchestrator = WorkerRegistry(client, worker_ttl_secs=0.2)
    await register(short, "dies", 2)
    assert await short.reserve_any("call-1", 30) == "dies"
    await asyncio.sleep(0.3)  # its registration expires in Redis: no heartbeat came
    from switchboard.observability import metrics

    before = metrics.WORKER_FAILURES._value.get()
    seen = await asyncio.gather(short.live_workers(), other_orchestrator.live_workers())
    assert seen == [[], []]
    assert metrics.WORKER_FAILURES._value.get() == before + 1
    assert await short.reserve_any("call-2", 30) is None


def placer(client: aioredis.Redis, registry: WorkerRegistry) -> tuple[StreamPlacer, CallLedger]:
    settings = Settings(stream_secret=SECRET, reservation_ttl_secs=30)
    ledger = CallLedger(client, 600)
    return StreamPlacer(settings, registry, ledger, CallSessions(client, 600)), ledger


async def test_a_placed_call_is_sent_to_the_edge_with_a_token_naming_its_worker(client, registry) -> None:
    await register(registry, "w1", 1)
    stream_placer, ledger = placer(client, registry)
    twiml = await stream_placer.place("call-CA1", "CA1", "https://edge.example.com", {"From": "+1555"}, {})
    stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://edge.example.com/twilio/media"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    claims = stream_tokens.verify(SECRET, params[STREAM_TOKEN_PARAM], "w1")
    assert claims.call_id == "call-CA1" and params["From"] == "+1555"
    redirect = ElementTree.fromstring(twiml).find("./Redirect")
    assert redirect is not None and redirect.text == "https://edge.example.com/twilio/resume"
    state = await ledger.get("call-CA1")
    assert (state["status"], state["worker"]) == ("reserved", "w1")


async def test_a_call_no_worker_can_take_is_told_so_and_recorded_as_rejected(client, registry) -> None:
    await register(registry, "full", 0)
    stream_placer, ledger = placer(client, registry)
    twiml = await stream_placer.place("call-CA2", "CA2", "https://edge.example.com", {}, {})
    root = ElementTree.fromstring(twiml)
    assert root.find("./Say").text == BUSY_MESSAGE and root.find("./Hangup") is not None
    state = await ledger.get("call-CA2")
    assert (state["status"], state["reason"]) == ("rejected", "no_capacity")


async def test_a_call_lost_on_a_worker_goes_elsewhere_or_back_if_it_is_the_only_one(client, registry) -> None:
    await register(registry, "lost", 2)
    stream_placer, _ = placer(client, registry)

    def worker_of(twiml: str) -> str:
        stream = ElementTree.fromstring(twiml).find("./Connect/Stream")
        assert stream is not None, twiml
        token = next(p.get("value") for p in stream.findall("Parameter") if p.get("name") == STREAM_TOKEN_PARAM)
        return stream_tokens.read(SECRET, token).worker_id

    # Its worker may be alive after all (the edge died, not it): the only one, it is used.
    assert worker_of(await stream_placer.place("call-a", "a", "https://e", {}, {}, exclude="lost")) == "lost"
    await register(registry, "other", 2)
    assert worker_of(await stream_placer.place("call-b", "b", "https://e", {}, {}, exclude="lost")) == "other"

