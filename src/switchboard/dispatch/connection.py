"""One Redis connection pool per process, with timeouts on every command."""

from __future__ import annotations

import redis.asyncio as redis


def connect(url: str) -> redis.Redis:
    """A pooled client; commands time out instead of hanging when Redis is unreachable."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=10,
        max_connections=64,
    )
