"""Per-source rate limits on every public HTTP endpoint, shared by all orchestrators in Redis.

Each request is counted against its endpoint group's limit (``Settings.rate_limit_*``, in the
``limits`` package's notation: ``600/minute``) for its source address, in a moving window kept
in Redis (``keys.RATE_LIMIT_PREFIX``), so replicas behind a load balancer enforce one budget. A
request over the limit gets 429 with ``Retry-After`` before any work is done for it (before a
webhook's signature is checked); a WebSocket handshake (a media stream, on any path) over
the ``media`` limit gets the same 429 instead of an upgrade. The source is the peer address; behind a proxy uvicorn puts
the client from ``X-Forwarded-For`` there, but only for peers listed in
``SWITCHBOARD_TRUSTED_PROXIES`` (see ``serving.serve``). Health checks are never limited.
If Redis cannot be reached the request is let through (and counted): placement needs Redis
anyway and answers 503 on its own.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from loguru import logger
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from switchboard.dispatch import keys
from switchboard.observability import metrics
from switchboard.settings import Settings

_EXEMPT = ("/health",)  # /health and /health/live: load balancers and probes poll them


@dataclass(frozen=True)
class LimitGroup:
    """Endpoints (by path prefix) that share one per-source limit."""

    name: str
    prefixes: tuple[str, ...]
    limits: tuple[RateLimitItem, ...]


def media_group(settings: Settings) -> LimitGroup:
    """WebSocket handshakes (media streams), whatever their path."""
    return LimitGroup("media", ("/",), tuple(parse_many(settings.rate_limit_media)))


def limit_groups(settings: Settings) -> list[LimitGroup]:
    """The orchestrator's HTTP endpoint groups, first match wins; ``pages`` takes every other path."""
    return [
        LimitGroup(
            "webhook", ("/twilio/", "/webhooks/"), tuple(parse_many(settings.rate_limit_webhooks))
        ),
        LimitGroup("webrtc", ("/webrtc/",), tuple(parse_many(settings.rate_limit_webrtc))),
        LimitGroup(
            "operator",
            ("/manual/", "/calls", "/stats", "/metrics", "/dashboard"),
            tuple(parse_many(settings.rate_limit_operator)),
        ),
        LimitGroup("pages", ("/",), tuple(parse_many(settings.rate_limit_pages))),
    ]


class RateLimitMiddleware:
    """ASGI middleware: 429 with ``Retry-After`` for a source over its group's limit."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.groups = limit_groups(settings)
        self.media = media_group(settings)
        storage = RedisStorage(
            "async+" + settings.redis_url,
            implementation="redispy",
            key_prefix=keys.RATE_LIMIT_PREFIX,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )
        self.limiter = MovingWindowRateLimiter(storage)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(_EXEMPT):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            group = self.media
        else:
            group = next(g for g in self.groups if scope["path"].startswith(g.prefixes))
        source = scope["client"][0] if scope.get("client") else "unknown"
        retry_after = await self._over_limit(group, source)
        if retry_after is None:
            await self.app(scope, receive, send)
            return
        metrics.RATE_LIMITED.labels(group=group.name).inc()
        body = json.dumps(
            {"error": f"too many requests to {group.name} endpoints; retry in {retry_after} s"}
        )
        if scope["type"] == "websocket":
            await self._refuse_handshake(scope, send, retry_after, body)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(retry_after).encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    @staticmethod
    async def _refuse_handshake(scope: Scope, send: Send, retry_after: int, body: str) -> None:
        """429 to the upgrade request where the server can answer one, else a refused handshake."""
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", str(retry_after).encode()),
        ]
        await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body.encode()})

    async def _over_limit(self, group: LimitGroup, source: str) -> int | None:
        """Seconds until ``source`` may call ``group`` again, or None if this request may pass."""
        try:
            for limit in group.limits:
                if not await self.limiter.hit(limit, group.name, source):
                    stats = await self.limiter.get_window_stats(limit, group.name, source)
                    return max(1, math.ceil(stats.reset_time - time.time()))
        except (RedisError, OSError) as e:
            metrics.CONNECTION_ERRORS.labels(transport="redis").inc()
            logger.warning(f"rate limit store unreachable, letting the request through: {e}")
        return None
