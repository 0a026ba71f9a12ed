"""The probe of issue 24 on a default ``switchboard up``: one real call, then what it left behind.

``switchboard up`` with its defaults (run in an empty directory, so ``var/`` is its own) and the
example receptionist, which records calls; the caller is the simulator with a speech clip. Then:
everything under ``var/`` is the owner's only, Redis wants its password (which no log line
shows), the caller's words and number are not in the INFO log, and a Redis killed under the
supervisor comes back with its data.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from conftest import SPEECH_DIR, free_port, wait_for
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call

CALLER_NUMBER = "+15005550123"
CLIP = "pocketsphinx_goforward_16k.wav"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _start_up(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, Path]:
    """``switchboard up`` with one worker in ``cwd``, in a session of its own (the terminal)."""
    log_path = cwd / "up.log"
    with open(log_path, "w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "switchboard.cli", "up", "--workers", "1"],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return up, log_path


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def test_a_call_on_a_default_switchboard_up_leaves_nothing_readable_or_logged(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    plain_redis = f"redis://127.0.0.1:{redis_port}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_PORT=str(port),
        SWITCHBOARD_REDIS_URL=plain_redis,
        SWITCHBOARD_INFERENCE_THREADS="1",
        SWITCHBOARD_LOG_LEVEL="INFO",
    )
    up, log_path = _start_up(env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    var = tmp_path / "var"
    try:
        wait_for(lambda: _healthy(base), 180, 0.5, "switchboard up ready")
        script = CallScript(turns=[CallerTurn(audio=SPEECH_DIR / CLIP)], from_number=CALLER_NUMBER)
        result = await run_call(base, script, transcribe=False)
        assert result.outcome in ("completed", "agent_hung_up"), result.outcome
        key = {"X-API-Key": (var / "operator-key").read_text().strip()}

        def stored() -> dict | None:
            calls = httpx.get(f"{base}/calls", headers=key, timeout=5).json()["calls"]
            if not calls or not calls[0].get("recording"):
                return None
            return httpx.get(f"{base}/calls/{calls[0]['call_id']}", headers=key, timeout=5).json()

        call = wait_for(stored, 30, 0.5, "call record and recording saved")
        heard = [e["text"].strip() for e in call["transcript"] if e["role"] == "user" and e["text"].strip()]
        assert heard and call["from_number"] == CALLER_NUMBER, call

        # Owner-only: var/ and everything the stack wrote in it.
        assert _mode(var) == 0o700
        written = list(var.rglob("*"))
        expected = {"operator-key", "redis-password", "switchboard.db", "switchboard.db-wal", "recordings", "redis"}
        assert expected <= {p.name for p in written}, written
        assert any(p.suffix == ".flac" for p in written) and any(p.suffix == ".aof" for p in written), written
        loose = [(str(p), oct(_mode(p))) for p in written if _mode(p) != (0o700 if p.is_dir() else 0o600)]
        assert not loose, loose

        # Redis wants the deployment's password.
        password = (var / "redis-password").read_text().strip()
        try:
            redis.Redis.from_url(plain_redis).ping()
            raise AssertionError("Redis answered without its password")
        except redis.AuthenticationError:
            pass
        client = redis.Redis.from_url(plain_redis, password=password, decode_responses=True)
        assert client.hget(f"sb:call:{call['call_id']}", "status") == "completed"

        # Kill Redis under the supervisor: it comes back with its data and the stack with it.
        redis_pid = int(re.findall(r"started redis-server on port \d+ \(pid (\d+)", log_path.read_text())[0])
        os.kill(redis_pid, signal.SIGKILL)
        wait_for(lambda: "restarted redis-server" in log_path.read_text(), 15, 0.1, "redis restarted")
        wait_for(lambda: _healthy(base), 30, 0.2, "stack healthy again")
        assert client.hget(f"sb:call:{call['call_id']}", "status") == "completed"
        client.close()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
    log = log_path.read_text(errors="replace")
    assert "redis-server exited with -9" in log
    assert password not in log
    assert CALLER_NUMBER not in log and CALLER_NUMBER.lstrip("+") not in log
    for words in heard:
        assert words not in log, f"the caller's words {words!r} are in the INFO log"
