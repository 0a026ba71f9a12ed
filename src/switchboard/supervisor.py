"""``switchboard up``: Redis, an orchestrator and N workers as supervised child processes.

Crashed children, and the Redis we started, are restarted with exponential backoff; Ctrl-C
(or SIGTERM) drains workers first, then stops the orchestrator and, if we started it, Redis.
Every process runs under an owner-only umask, so what the stack writes (call history,
recordings, Redis's append-only file, secrets) is the owner's only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from switchboard.local_redis import LocalRedis, redacted, redis_reachable
from switchboard.private_files import OWNER_ONLY_UMASK
from switchboard.settings import Settings

BACKOFF_START_SECS = 1.0
BACKOFF_MAX_SECS = 30.0
STABLE_AFTER_SECS = 60.0
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

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, umask=OWNER_ONLY_UMASK)
        self.started_at = time.monotonic()
        self.restart_at = None
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


class Supervisor:
    def __init__(self, settings: Settings, workers: int, agent: str | None, data_dir: Path):
        self.settings = settings
        self.workers = workers
        self.agent = agent
        self.children: list[Child] = []
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

    def run(self) -> int:
        self.children = plan_children(self.settings, self.workers, self.agent, redis_url=self._redis_url())
        for child in self.children:
            child.start()
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
        now = time.monotonic()
        for child in self.children:
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
        for group, limit in ((workers, self.settings.drain_timeout_secs + 15), (others, 15)):
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
