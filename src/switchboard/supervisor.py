"""``switchboard up``: Redis, an orchestrator and N workers as supervised child processes,
and with ``--livekit`` a LiveKit server and LiveKit SIP beside them.

Crashed children are restarted with exponential backoff; Ctrl-C (or SIGTERM) drains workers
first (their calls are in LiveKit rooms, so LiveKit stays up meanwhile), then stops the
orchestrator, LiveKit SIP, the LiveKit server and, if we started it, Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis
from loguru import logger

from switchboard.settings import Settings
from switchboard.telephony.livekit_local import LocalLiveKit, server_ready, sip_ready, wait_until

BACKOFF_START_SECS = 1.0
BACKOFF_MAX_SECS = 30.0
STABLE_AFTER_SECS = 60.0
LIVEKIT_START_SECS = 30.0
WORKER_HOST = "127.0.0.1"  # workers are internal: only the orchestrator's edge talks to them


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_START_SECS
    restart_at: float | None = None
    restarts: int = field(default=0)
    # Its own session: the terminal's Ctrl-C must not stop it before the workers have drained.
    own_session: bool = False

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=self.own_session)
        self.started_at = time.monotonic()
        self.restart_at = None
        logger.info(f"started {self.name} (pid {self.process.pid})")


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def start_redis(url: str, data_dir: Path) -> subprocess.Popen:
    """Spawn redis-server with AOF persistence in ``data_dir``, bound to loopback."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: install it (make run does) or set SWITCHBOARD_REDIS_URL")
    port = urlsplit(url).port or 6379
    data_dir.mkdir(parents=True, exist_ok=True)
    # Its own session: the terminal's Ctrl-C reaches every process of its group at once, and
    # Redis must outlive the workers' drain (the supervisor stops it last).
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--loglevel", "warning"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not redis_reachable(url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    logger.info(f"started redis-server on port {port} (AOF in {data_dir})")
    return process


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "switchboard.cli", *args]


def plan_children(settings: Settings, workers: int, agent: str | None) -> list[Child]:
    env = {
        **os.environ,
        "SWITCHBOARD_REDIS_URL": settings.redis_url,
        "SWITCHBOARD_MAX_CALLS": str(settings.max_calls),
    }
    # Share the cores between worker processes instead of oversubscribing them.
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    env.setdefault("SWITCHBOARD_INFERENCE_THREADS", str(threads))
    agent_args = ["--agent", agent] if agent else []
    # Only the orchestrator (the public edge) listens on SWITCHBOARD_HOST; workers listen on
    # loopback and are reached through the edge's media relay.
    children = [Child("orchestrator", _cli("orchestrator", "--port", str(settings.port)),
                      {**env, "SWITCHBOARD_HOST": settings.host})]
    for i in range(workers):
        port = settings.port + 1 + i
        worker_env = {
            **env,
            "SWITCHBOARD_HOST": WORKER_HOST,
            "SWITCHBOARD_WORKER_INTERNAL_URL": f"http://{WORKER_HOST}:{port}",
        }
        children.append(
            Child(f"worker-{i + 1}", _cli("worker", "--port", str(port), "--worker-id", f"worker-{i + 1}", *agent_args),
                  worker_env)
        )
    return children


def plan_livekit(livekit: LocalLiveKit) -> list[Child]:
    env = dict(os.environ)
    return [
        Child("livekit-server", livekit.server_argv(), env, own_session=True),
        Child("livekit-sip", livekit.sip_argv(), env, own_session=True),
    ]


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        workers: int,
        agent: str | None,
        data_dir: Path,
        livekit: LocalLiveKit | None = None,
        after_livekit: Callable[[], None] | None = None,
    ):
        self.settings = settings
        self.children = plan_children(settings, workers, agent)
        self.livekit = livekit
        self.livekit_children = plan_livekit(livekit) if livekit else []
        self.after_livekit = after_livekit
        self.data_dir = data_dir
        self.redis_process: subprocess.Popen | None = None
        self._stopping = False

    def _start_livekit(self) -> None:
        """The server, then SIP (it finds the server through Redis), each once it answers."""
        assert self.livekit is not None
        server, sip = self.livekit_children
        ports = self.livekit.ports
        for child, ready in ((server, lambda: server_ready(ports)), (sip, lambda: sip_ready(ports))):
            child.start()
            wait_until(ready, LIVEKIT_START_SECS, child.name, alive=lambda c=child: c.process.poll() is None)
            logger.info(f"{child.name} ready")
        if self.after_livekit is not None:
            self.after_livekit()

    def run(self) -> int:
        if not redis_reachable(self.settings.redis_url):
            self.redis_process = start_redis(self.settings.redis_url, self.data_dir / "redis")
        try:
            if self.livekit is not None:
                self._start_livekit()
            for child in self.children:
                child.start()
        except BaseException:
            self._shutdown()
            raise
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        logger.info(f"Switchboard is up: http://{self.settings.host}:{self.settings.port} (Ctrl-C to stop)")
        try:
            while not self._stopping:
                self._watch()
                time.sleep(0.5)
        finally:
            self._shutdown()
        return 0

    def _request_stop(self, signum: int, _frame) -> None:
        if self._stopping:
            logger.warning("stopping already; waiting for workers to drain")
            return
        logger.info(f"{signal.Signals(signum).name}: shutting down")
        self._stopping = True

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.livekit_children + self.children:
            if child.process is None:
                continue
            code = child.process.poll()
            if code is None:
                if now - child.started_at > STABLE_AFTER_SECS:
                    child.backoff = BACKOFF_START_SECS
                continue
            if child.restart_at is None:
                child.restart_at = now + child.backoff
                logger.error(f"{child.name} exited with {code}; restarting in {child.backoff:.0f} s")
                child.backoff = min(child.backoff * 2, BACKOFF_MAX_SECS)
            elif now >= child.restart_at:
                child.restarts += 1
                child.start()

    def _shutdown(self) -> None:
        workers = [c for c in self.children if c.name.startswith("worker") and c.process]
        others = [c for c in self.children if not c.name.startswith("worker") and c.process]
        # LiveKit SIP hangs up its calls before the server closes their rooms.
        sip = [c for c in self.livekit_children if c.name == "livekit-sip" and c.process]
        server = [c for c in self.livekit_children if c.name == "livekit-server" and c.process]
        for group, limit in (
            (workers, self.settings.drain_timeout_secs + 15), (others, 15), (sip, 15), (server, 15)
        ):
            for child in group:
                if child.process and child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + limit
            for child in group:
                assert child.process is not None
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    logger.warning(f"{child.name} did not stop in time; killing it")
                    child.process.kill()
        if self.redis_process is not None:
            self.redis_process.terminate()
            self.redis_process.wait(timeout=15)
        logger.info("Switchboard stopped")
