"""Run an ASGI app under uvicorn with a drain step before shutdown.

Uvicorn's own SIGTERM handling closes WebSockets at once (code 1012), which would cut live
calls. Here the first SIGTERM/SIGINT runs ``before_exit`` (stop taking calls, let live ones
finish) and only then lets uvicorn shut down; a second SIGINT forces the exit. A SIGTERM while
draining changes nothing: Ctrl-C on ``switchboard up`` delivers the terminal's SIGINT and then
the supervisor's SIGTERM to each worker, and that is one request to drain.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn
from loguru import logger

from switchboard.settings import Settings


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first exit signal drains before exiting."""

    def __init__(self, config: uvicorn.Config, before_exit: Callable[[], Awaitable[None]] | None):
        super().__init__(config)
        self._before_exit = before_exit
        self._draining: asyncio.Task | None = None
        self._drain_requested = False
        self._interrupts = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._interrupts += sig == signal.SIGINT
        if self._before_exit is None or self._loop is None:
            self.force_exit = self.should_exit
            self.should_exit = True
            return
        if self._drain_requested:
            if sig == signal.SIGINT and self._interrupts >= 2:
                logger.warning("second interrupt: exiting without waiting for calls")
                self.force_exit = self.should_exit
                self.should_exit = True
            else:
                logger.info(f"received {signal.Signals(sig).name}: already draining")
            return
        self._drain_requested = True
        logger.info(f"received {signal.Signals(sig).name}: draining before exit")
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        async def drain_then_exit() -> None:
            try:
                assert self._before_exit is not None
                await self._before_exit()
            except Exception:
                logger.exception("drain failed; exiting anyway")
            self.should_exit = True

        self._draining = asyncio.create_task(drain_then_exit(), name="drain")


def serve(app, settings: Settings, before_exit: Callable[[], Awaitable[None]] | None = None) -> None:
    """Serve ``app`` on ``settings.host:port`` until a signal, draining first.

    Every WebSocket message of the process is capped at ``media_max_message_bytes``: the protocol
    layer closes the socket with 1009 from the frame header, before it reads or decodes an
    oversized payload. ``X-Forwarded-For``/``-Proto`` are believed only from
    ``trusted_proxies`` (uvicorn's own default would trust any local peer).
    """
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws="websockets-sansio",
        # Audio does not compress; deflating every media frame only costs both ends CPU.
        ws_per_message_deflate=False,
        ws_max_size=settings.media_max_message_bytes,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
        timeout_graceful_shutdown=10,
    )
    DrainingServer(config, before_exit).run()
