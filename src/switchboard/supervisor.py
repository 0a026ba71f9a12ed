"""``switchboard up``: Redis, an orchestrator and N workers as supervised child processes,
and with ``--livekit`` a LiveKit server and LiveKit SIP beside them.

Crashed children, and the Redis we started, are restarted with exponential backoff; Ctrl-C
(or SIGTERM) drains workers first (their calls may be in LiveKit rooms, so LiveKit stays up
meanwhile), then stops the orchestrator, LiveKit SIP, the LiveKit server and, if we started
it, Redis.
Every process runs under an owner-only umask, so what the stack writes (call history,
recordings, Redis's append-only file, secrets) is the owner's only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from switchboard.local_redis import LocalRedis, redacted, redis_reachable
from switchboard.private_files import OWNER_ONLY_UMASK
from switchboard.restarts import RestartBackoff
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
    restart: RestartBackoff = field(
        default_factory=lambda: RestartBackoff(BACKOFF_START_SECS, BACKOFF_MAX_SECS, STABLE_AFTER_SECS)
    )
    # Its own session: the terminal's Ctrl-C must not stop it before the workers have drained.
    own_session: bool = False

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, env=self.env, umask=OWNER_ONLY_UMASK, start_new_session=self.own_session
        )
        self.restart.started()
        logger.info(f"started {self.name} (pid {self.process.pid})")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "switchboard.cli", *args]


def plan_children(
    settings: Settings, workers: int, agent: str | None, *, redis_url: str | None = None
) -> list[Child]:
    """The orchestrator and workers; ``redis_url`` (with the password of a Redis we started)
    defaults to the configured one."""
    env = {
        **os.environ,
        "SWITCHBOARD_REDIS_URL": redis_url or settings.redis_url,
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
        livekit: Callable[[str], LocalLiveKit] | None = None,
        after_livekit: Callable[[], None] | None = None,
    ):
        """``livekit`` writes the local LiveKit's config for the stack's Redis URL (known once
        Redis is up: ours has a password) and sets its keys in the environment the children
        inherit; ``after_livekit`` runs once both answer (the trunk and dispatch rule)."""
        self.settings = settings
        self.workers = workers
        self.agent = agent
        self.children: list[Child] = []
        self.plan_livekit = livekit
        self.livekit: LocalLiveKit | None = None
        self.livekit_children: list[Child] = []
        self.after_livekit = after_livekit
        self.data_dir = data_dir
        self.redis: LocalRedis | None = None  # the Redis we started and watch, if we did
        self._stopping = False

    def _redis_url(self) -> str:
        """The configured Redis if it answers; else one of our own (started and watched)."""
        url = self.settings.redis_url
        if redis_reachable(url):
            logger.info(f"using the Redis at {redacted(url)}")
            return url
        local = LocalRedis.for_deployment(url, self.data_dir)
        if redis_reachable(local.url):  # ours, left running by an earlier supervisor
            logger.info(f"using the Redis already running at {redacted(local.url)}")
            return local.url
        local.start()
        self.redis = local
        return local.url

    def _start_livekit(self, redis_url: str) -> None:
        """The server, then SIP (it finds the server through Redis), each once it answers."""
        assert self.plan_livekit is not None
        self.livekit = self.plan_livekit(redis_url)
        self.livekit_children = plan_livekit(self.livekit)
        ports = self.livekit.ports
        server, sip = self.livekit_children
        for child, ready in ((server, lambda: server_ready(ports)), (sip, lambda: sip_ready(ports))):
            child.start()
            wait_until(ready, LIVEKIT_START_SECS, child.name, alive=lambda c=child: c.process.poll() is None)
            logger.info(f"{child.name} ready")
        if self.after_livekit is not None:
            self.after_livekit()

    def run(self) -> int:
        redis_url = self._redis_url()
        try:
            if self.plan_livekit is not None:
                self._start_livekit(redis_url)
            # Planned after LiveKit: the children inherit the environment that names it.
            self.children = plan_children(self.settings, self.workers, self.agent, redis_url=redis_url)
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
        if self.redis is not None:
            self.redis.watch()
        for child in self.livekit_children + self.children:
            if child.process is not None and child.restart.due(child.name, child.process.poll()):
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
        if self.redis is not None:
            self.redis.stop()
        logger.info("Switchboard stopped")
