"""The Redis that ``switchboard up`` starts: loopback only, a password, AOF, restarted if it dies.

Its password is made once per deployment and kept owner-only in the data directory
(``var/redis-password``, beside the operator key). redis-server reads it from its standard input,
never its command line (which any local user sees in ``ps``); the orchestrator and workers get
it in their Redis URL (their environment is their owner's only). Every log line that names a
Redis URL names it through :func:`redacted`.

If redis-server exits, :meth:`LocalRedis.watch` (called by the supervisor's loop) restarts it
with its data (the same directory and append-only file), after a backoff that grows while it
keeps dying. Meanwhile the orchestrator answers new phone calls with the spoken busy line.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from loguru import logger

from switchboard.private_files import OWNER_ONLY_UMASK, local_secret, tighten_dir
from switchboard.restarts import RestartBackoff

PASSWORD_FILE = "redis-password"
DATA_SUBDIR = "redis"
RESTART_BACKOFF_START_SECS = 0.5  # a killed Redis is back within a second
RESTART_BACKOFF_MAX_SECS = 10.0
STABLE_AFTER_SECS = 60.0  # running this long resets the backoff
START_TIMEOUT_SECS = 10.0


def redacted(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: the form a log line may carry."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def with_password(url: str, password: str) -> str:
    """``url`` authenticating with ``password`` (as Redis's default user)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{password}@{host}"))


def redis_reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _config_line(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name} "{escaped}"\n'


class LocalRedis:
    """One redis-server of our own, started and restarted by the supervisor."""

    def __init__(self, url: str, data_dir: Path, password: str):
        self.port = urlsplit(url).port or 6379
        self.url = with_password(url, password)
        self.data_dir = data_dir
        self._password = password
        self.process: subprocess.Popen | None = None
        self.restart = RestartBackoff(RESTART_BACKOFF_START_SECS, RESTART_BACKOFF_MAX_SECS, STABLE_AFTER_SECS)

    @classmethod
    def for_deployment(cls, url: str, data_dir: Path) -> LocalRedis:
        """The Redis for ``url`` keeping its data under ``data_dir``: the URL's own password if it
        has one, else this deployment's (made on first use)."""
        password = urlsplit(url).password or local_secret(data_dir / PASSWORD_FILE)
        return cls(url, data_dir / DATA_SUBDIR, password)

    def _config(self) -> str:
        return "".join(
            [
                _config_line("port", str(self.port)),
                _config_line("bind", "127.0.0.1"),
                _config_line("dir", str(self.data_dir.resolve())),
                _config_line("appendonly", "yes"),
                _config_line("appendfsync", "everysec"),
                _config_line("save", ""),
                _config_line("loglevel", "warning"),
                _config_line("requirepass", self._password),
            ]
        )

    def _spawn(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: install it (make run does) or set SWITCHBOARD_REDIS_URL")
        tighten_dir(self.data_dir)
        # Its own session: the terminal's Ctrl-C reaches every process of its group at once, and
        # Redis must outlive the workers' drain (the supervisor stops it last). "-": the
        # configuration, password included, comes on standard input.
        self.process = subprocess.Popen(
            [binary, "-"], stdin=subprocess.PIPE, start_new_session=True, umask=OWNER_ONLY_UMASK
        )
        assert self.process.stdin is not None
        self.process.stdin.write(self._config().encode())
        self.process.stdin.close()
        self.restart.started()

    def start(self) -> None:
        """Start redis-server and wait until it answers."""
        self._spawn()
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not redis_reachable(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        logger.info(
            f"started redis-server on port {self.port} (pid {self.process.pid}, password required, "
            f"AOF in {self.data_dir})"
        )

    def watch(self) -> None:
        """If redis-server has died, restart it with its data once its backoff has passed."""
        if self.process is None:
            return
        if self.restart.due("redis-server", self.process.poll()):
            self._spawn()
            logger.warning(
                f"restarted redis-server on port {self.port} (pid {self.process.pid}, restart "
                f"{self.restart.restarts}) from its AOF in {self.data_dir}"
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
