"""Per-source rate limits and body limits on real orchestrators sharing one real Redis.

Sources are told apart by loopback address: the flood comes from 127.0.0.2, Twilio from
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.exceptions import InvalidStatus

from conftest import RedisServer, Server, metric, start_orchestrator, start_redis

AUTH_TOKEN = "rate-limit-test-token"
PUBLIC_URL = "https://switchboard.example"
WEBHOOK_LIMIT = 20
FLOOD = 3 * WEBHOOK_LIMIT
MEDIA_LIMIT = 5


@dataclass
class Pair:
    redis: RedisServer
    first: Server
    second: Server
    behind_proxy: Server  # trusts X-Forwarded-For from 127.0.0.1


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    data_dir = Path(tempfile.mkdtemp(prefix="sb-ratelimit-redis-"))
    redis = start_redis(data_dir)
    env = {
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "SWITCHBOARD_PUBLIC_URL": PUBLIC_URL,
        "SWITCHBOARD_RATE_LIMIT_WEBHOOKS": f"{WEBHOOK_LIMIT}/minute",
        "SWITCHBOARD_RATE_LIMIT_MEDIA": f"{MEDIA_LIMIT}/minute",
        "SWITCHBOARD_LOG_LEVEL": "INFO",
    }
    servers: list[Server] = []
    try:
        servers.append(start_orchestrator(redis.url, env))
        servers.append(start_orchestrator(redis.url, env))
        servers.append(
            start_orchestrator(redis.url, {**env, "SWITCHBOARD_TRUSTED_PROXIES": "127.0.0.1"})
        )
        yield Pair(redis, *servers)
    finally:
        for server in servers:
            server.stop()
        redis.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def signed(form: dict[str, str]) -> dict[str, str]:
    return {
        "X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(
            f"{PUBLIC_URL}/twilio/voice", form
        )
    }


def client_from(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address), timeout=10)


async def test_a_flood_gets_429_across_two_orchestrators_while_signed_webhooks_are_answered(
    pair: Pair,
) -> None:
    urls = [pair.first.base_url, pair.second.base_url]

    async def flood(client: httpx.AsyncClient) -> list[httpx.Response]:
        form = {"CallSid": "CAflood", "From": "+15005550006", "To": "+15005550001"}
        return [await client.post(f"{urls[i % 2]}/twilio/voice", data=form) for i in range(FLOOD)]

    async def twilio(client: httpx.AsyncClient) -> list[httpx.Response]:
        replies = []
        for i in range(WEBHOOK_LIMIT // 2):
            form = {"CallSid": f"CAlegit{i}", "From": "+15005550006", "To": "+15005550001"}
            replies.append(
                await client.post(f"{urls[i % 2]}/twilio/voice", data=form, headers=signed(form))
            )
            await asyncio.sleep(0.02)  # paced like real calls, interleaved with the flood
        return replies

    async with client_from("127.0.0.2") as attacker, client_from("127.0.0.1") as twilio_side:
        flooded, legit = await asyncio.gather(flood(attacker), twilio(twilio_side))

    statuses = [r.status_code for r in flooded]
    assert statuses.count(403) == WEBHOOK_LIMIT, statuses  # one budget for both orchestrators
    assert statuses.count(429) == FLOOD - WEBHOOK_LIMIT, statuses
    refused = [r for r in flooded if r.status_code == 429]
    assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in refused)
    assert "too many requests" in refused[0].json()["error"]
    assert [r.status_code for r in legit] == [200] * len(legit), [r.text for r in legit]
    assert all("<Response>" in r.text for r in legit)

    limited = await asyncio.to_thread(metric, pair.first.base_url, "rate_limited_total", group="webhook")
    assert limited >= 1


async def test_forwarded_for_names_the_client_only_behind_a_trusted_proxy(pair: Pair) -> None:
    form = {"CallSid": "CAxff"}

    async def statuses(url: str, forwarded_for: str, n: int) -> list[int]:
        async with client_from("127.0.0.1") as client:
            headers = {"X-Forwarded-For": forwarded_for}
            return [
                (await client.post(f"{url}/twilio/voice", data=form, headers=headers)).status_code
                for _ in range(n)
            ]

    proxied = pair.behind_proxy.base_url
    assert 429 in await statuses(proxied, "198.51.100.1", WEBHOOK_LIMIT + 1)
    assert (
        await statuses(proxied, "198.51.100.2", 3) == [403] * 3
    )  # another client behind the proxy

    # Without a trusted proxy a forged header changes nothing: the peer 127.0.0.3 is the source.
    async with client_from("127.0.0.3") as client:
        codes = [
            (
                await client.post(
                    f"{pair.first.base_url}/twilio/voice",
                    data=form,
                    headers={"X-Forwarded-For": f"203.0.113.{i}"},
                )
            ).status_code
            for i in range(WEBHOOK_LIMIT + 1)
        ]
    assert codes[-1] == 429, codes


async def test_health_checks_are_never_rate_limited(pair: Pair) -> None:
    async with client_from("127.0.0.4") as client:
        codes = {
            (await client.get(f"{pair.first.base_url}/health/live")).status_code for _ in range(150)
        }
    assert codes == {200}


async def test_a_body_over_the_cap_is_refused_with_413_declared_or_streamed(pair: Pair) -> None:
    big = b"x" * (64 * 1024 + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with client_from("127.0.0.5") as client:
        declared = await client.post(f"{pair.first.base_url}/webrtc/offer", content=big)
        form_type = {"Content-Type": "application/x-www-form-urlencoded"}
        streamed = await client.post(
            f"{pair.first.base_url}/twilio/voice", content=chunks(), headers=form_type
        )
        small = await client.post(
            f"{pair.first.base_url}/webrtc/offer", json={"sdp": "", "type": "offer"}
        )
    assert declared.status_code == 413 and "over 65536 bytes" in declared.json()["error"]
    assert streamed.status_code == 413, streamed.text
    assert "content-length" not in streamed.request.headers  # it really was sent chunked
    assert small.status_code == 422  # under the cap the endpoint itself answers


async def test_websocket_handshakes_over_the_media_limit_get_429(pair: Pair) -> None:
    url = pair.first.base_url.replace("http://", "ws://") + "/twilio/media/no-such-stream"
    statuses = []
    for _ in range(MEDIA_LIMIT + 2):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, open_timeout=5):
                pass
        statuses.append(refused.value.response.status_code)
    assert statuses[:MEDIA_LIMIT] == [403] * MEDIA_LIMIT  # no such route on the orchestrator
    assert statuses[MEDIA_LIMIT:] == [429, 429]
    assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 60
