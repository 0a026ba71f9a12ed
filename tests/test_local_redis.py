"""The Redis ``switchboard up`` starts: restarted with its data when killed, password required,
owner-only files; and while Redis is down a caller hears the busy line, not an HTTP error.

A real redis-server for each test (started by ``LocalRedis`` exactly as the supervisor does); the
orchestrator with Redis down runs in-process.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from loguru import logger

from conftest import free_port, wait_for
from switchboard.local_redis import PASSWORD_FILE, LocalRedis, redacted, redis_reachable
from switchboard.observability import metrics
from switchboard.orchestrator.app import create_orchestrator_app
from switchboard.orchestrator.placement import BUSY_MESSAGE, LOST_MESSAGE
from switchboard.settings import Settings


@pytest.fixture
def local_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    server = LocalRedis.for_deployment(f"redis://127.0.0.1:{free_port()}/0", tmp_path / "var")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(sink)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_redis_killed_under_the_supervisor_is_restarted_with_its_data(
    local_redis: LocalRedis, log_lines: list[str]
) -> None:
    client = redis.Redis.from_url(local_redis.url)
    client.set("sb:probe", "kept")  # acknowledged once it is in the AOF file (not yet fsynced)
    first = local_redis.process
    assert first is not None
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=5)

    def restarted() -> bool:
        local_redis.watch()  # what the supervisor's loop does twice a second
        return local_redis.restart.restarts == 1 and redis_reachable(local_redis.url)

    wait_for(restarted, 10, 0.05, "redis restarted")
    assert local_redis.process is not first
    assert client.get("sb:probe") == b"kept"
    log = "\n".join(log_lines)
    assert "redis-server exited with -9; restarting it" in log
    assert "restarted redis-server" in log
    client.close()


def test_a_redis_that_keeps_dying_is_restarted_with_a_growing_backoff(local_redis: LocalRedis) -> None:
    waits = []
    for _ in range(2):
        assert local_redis.process is not None
        local_redis.process.kill()
        local_redis.process.wait(timeout=5)
        local_redis.watch()
        assert local_redis.restart.restart_at is not None
        waits.append(local_redis.restart.restart_at - time.monotonic())
        wait_for(lambda: (local_redis.watch(), local_redis.restart.restart_at is None)[1], 10, 0.05, "respawned")
        wait_for(lambda: redis_reachable(local_redis.url), 10, 0.05, "redis back")
    assert waits[1] > waits[0] * 1.5


def test_the_redis_up_starts_requires_its_password_which_no_log_or_command_line_shows(
    tmp_path: Path, log_lines: list[str]
) -> None:
    plain = f"redis://127.0.0.1:{free_port()}/0"
    server = LocalRedis.for_deployment(plain, tmp_path / "var")
    server.start()
    try:
        password = (tmp_path / "var" / PASSWORD_FILE).read_text().strip()
        assert len(password) >= 24
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(plain).ping()  # NOAUTH
        assert redis.Redis.from_url(server.url).ping()
        assert password in server.url and password not in redacted(server.url)
        assert server.process is not None
        assert password.encode() not in Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert not any(password in line for line in log_lines)
        # The same deployment keeps its password across restarts of the stack.
        assert LocalRedis.for_deployment(plain, tmp_path / "var").url == server.url
    finally:
        server.stop()


def test_redis_data_and_its_password_are_the_owners_only(local_redis: LocalRedis, tmp_path: Path) -> None:
    previous = os.umask(0o022)  # a permissive shell: the files must be private anyway
    try:
        redis.Redis.from_url(local_redis.url).set("sb:caller", "what a caller said")
        var = tmp_path / "var"
        assert _mode(var / PASSWORD_FILE) == 0o600
        data = var / "redis"
        assert _mode(data) == 0o700
        files = [p for p in data.rglob("*")]
        assert any(p.suffix == ".aof" for p in files), files
        for path in files:
            assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    finally:
        os.umask(previous)


async def test_with_redis_down_a_new_caller_hears_the_busy_line_not_an_http_error(tmp_path: Path) -> None:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        database_url=f"sqlite:///{tmp_path}/calls.db",
        twilio_auth_token=None,
    )
    app = create_orchestrator_app(settings)
    counted = metrics.CALLS_REJECTED.labels(reason="redis_unavailable")
    before = counted._value.get()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        new = await client.post("/twilio/voice", data={"CallSid": "CAdown", "From": "+15005550006"})
        lost = await client.post("/twilio/resume", data={"CallSid": "CAdown", "CallStatus": "in-progress"})
    assert new.status_code == 200, new.text
    assert new.headers["content-type"].startswith("application/xml")
    assert f"<Say>{BUSY_MESSAGE}</Say><Hangup />" in new.text
    assert lost.status_code == 200 and f"<Say>{LOST_MESSAGE}</Say>" in lost.text
    assert counted._value.get() == before + 2
