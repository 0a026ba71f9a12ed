"""Provider clients built once per process and shared by its calls, closed when the worker stops.

A client per call costs a TLS context each (the certifi bundle parsed again) and, for an SDK
that opens its own HTTP pool, a pool nobody reuses: building each call's Deepgram client was
~3 % of a worker at 25 cloud calls. Here a client is made on first use per provider, endpoint and
key (and event loop, for clients whose connections are bound to one), and
:func:`close_shared_clients` closes them all on the worker's way out.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from loguru import logger

_T = TypeVar("_T")

# key -> (client, how to close it or None)
_CLIENTS: dict[tuple, tuple[Any, Callable[[], Awaitable[Any]] | None]] = {}
_TLS_CONTEXT: ssl.SSLContext | None = None


def loop_key() -> int | None:
    """The running event loop's id (None outside one): part of the key of a loop-bound client."""
    try:
        return id(asyncio.get_running_loop())
    except RuntimeError:
        return None


def tls_context() -> ssl.SSLContext:
    """The process's client TLS context (system CAs, hostname checks), for every wss:// and https://."""
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        _TLS_CONTEXT = ssl.create_default_context()
    return _TLS_CONTEXT


def shared_client(
    key: tuple,
    build: Callable[[], _T],
    close: Callable[[_T], Awaitable[Any]] | None = None,
) -> _T:
    """The process's client for ``key``, built by ``build()`` on first use; ``close(client)`` is
    awaited by :func:`close_shared_clients`."""
    entry = _CLIENTS.get(key)
    if entry is None:
        client = build()
        entry = _CLIENTS[key] = (client, (lambda: close(client)) if close else None)
    return entry[0]


def shared_count() -> int:
    """How many shared clients the process holds (one per provider, endpoint, key and loop)."""
    return len(_CLIENTS)


async def close_shared_clients() -> None:
    """Close every shared client (worker shutdown); the next use builds a new one."""
    entries = list(_CLIENTS.values())
    _CLIENTS.clear()
    for client, close in entries:
        if close is None:
            continue
        try:
            await close()
        except (RuntimeError, OSError) as e:
            # A client whose pool belongs to a loop that has ended (a test's) cannot be closed
            # from this one; its sockets went with that loop.
            logger.debug(f"shared client {type(client).__name__} not closed: {e}")
