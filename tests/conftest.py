"""Shared fixtures: the speech clips, real servers on loopback, and the checks every test shares
(metrics, call records, no process left behind)."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import module_order
import process_guard
from switchboard.call_ids import call_id_for_twilio, is_call_id, twilio_call_sid

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SWITCHBOARD_SHARED_DIR", REPO.parent / "shared"))
SPEECH_DIR = SHARED / "data" / "speech"
TEST_AGENT = REPO / "tests" / "agents" / "speech_clips.yaml"
API_KEY = "test-operator-key"  # servers under test guard call records with it
OPERATOR = {"X-API-Key": API_KEY}  # headers of an operator request
RECORDS_DIR = REPO / ".pytest_cache" / "records"
# Servers under test keep their call history out of the repo's var/ and share one database.
SERVER_ENV = {
    "SWITCHBOARD_API_KEY": API_KEY,
    "SWITCHBOARD_DATABASE_URL": f"sqlite:///{RECORDS_DIR}/switchboard.db",
    "SWITCHBOARD_RECORDINGS_URL": str(RECORDS_DIR / "recordings"),
    # The agents' fixed lines are synthesized by the first server of the session, read by the rest.
    "SWITCHBOARD_TTS_CACHE_DIR": str(REPO / ".pytest_cache" / "tts"),
}


@dataclass(frozen=True)
class Clip:
    """One real speech clip and what is said in it."""

    path: Path
    transcript: str


def _test_agent_replies() -> dict[str, str]:
    from switchboard.agent.config import load_agent_config

    return {intent.name: intent.reply for intent in load_agent_config(TEST_AGENT).intents}


REPLIES = _test_agent_replies()


def replied(text: str | None, reply: str) -> bool:
    """The caller heard this reply: most of its words (Whisper tiny mishears single words)."""
    from switchboard.loadtest.clarity import word_accuracy

    return word_accuracy(reply, text or "") >= 0.6


@pytest.fixture(scope="session")
def speech_clips() -> dict[str, Clip]:
    """The manifest's clips by file name."""
    with open(SPEECH_DIR / "manifest.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {r["file"]: Clip(SPEECH_DIR / r["file"], r["transcript"]) for r in rows}


def call_sid_in(token: str | None) -> str:
    """The CallSid a stream token was placed for, read without checking the token (a test's
    stream presents it in the ``start`` of that call); a fresh one if it names none."""
    try:
        payload = token.partition(".")[0] if token else ""
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return twilio_call_sid(str(claims["c"]))
    except (ValueError, KeyError, TypeError):
        return "CA" + os.urandom(16).hex()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base_url: str, process: subprocess.Popen, limit_secs: float = 90.0, path: str = "/health") -> None:
    deadline = time.monotonic() + limit_secs
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}{path}", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base_url} not healthy after {limit_secs} s")


@dataclass
class Server:
    """A server process under test, with its log file."""

    base_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


LOG_DIR = REPO / ".pytest_cache" / "servers"


def start_agent_server(env: dict[str, str] | None = None, agent: Path = TEST_AGENT) -> Server:
    """Start ``switchboard serve`` on a free port and wait until it reports healthy."""
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"agent-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "switchboard.cli", "serve", "--port", str(port), "--agent", str(agent)],
            env={**os.environ, "SWITCHBOARD_LOG_LEVEL": "DEBUG", **SERVER_ENV, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_healthy(server.base_url, process)
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def agent_server() -> Iterator[Server]:
    """A real agent server with offline engines and the speech-clip test agent."""
    server = start_agent_server()
    process_guard.own_for_session(server.process.pid)
    yield server
    server.stop()
    process_guard.release(server.process.pid)


@pytest.fixture(scope="session")
def agent_url(agent_server: Server) -> str:
    return agent_server.base_url


def _spawn(argv: list[str], name: str, port: int, env: dict[str, str] | None) -> Server:
    """Start a server process (not yet waited for)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            argv,
            env={**os.environ, "SWITCHBOARD_LOG_LEVEL": "DEBUG", **SERVER_ENV, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(f"http://127.0.0.1:{port}", process, log_path)


def _healthy_or_stopped(server: Server, health_path: str) -> Server:
    try:
        wait_healthy(server.base_url, server.process, path=health_path)
    except Exception:
        server.stop()
        raise
    return server


def _start(argv: list[str], name: str, health_path: str, port: int, env: dict[str, str] | None) -> Server:
    return _healthy_or_stopped(_spawn(argv, name, port, env), health_path)


@dataclass
class RedisServer:
    """A redis-server of the test's own, with AOF persistence in a temporary directory."""

    url: str
    port: int
    data_dir: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        import redis

        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def start_redis(data_dir: Path) -> RedisServer:
    port = free_port()
    server = RedisServer(f"redis://127.0.0.1:{port}/0", port, data_dir)
    server.start()
    return server


# Tests poll /stats every 50 ms; the production per-source limit is for people and Prometheus.
TEST_OPERATOR_RATE_LIMIT = {"SWITCHBOARD_RATE_LIMIT_OPERATOR": "100000/minute"}


def start_orchestrator(redis_url: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    return _start(
        [sys.executable, "-m", "switchboard.cli", "orchestrator", "--port", str(port)],
        "orchestrator", "/health/live", port,
        {"SWITCHBOARD_REDIS_URL": redis_url, **TEST_OPERATOR_RATE_LIMIT, **(env or {})},
    )


def _spawn_worker(
    redis_url: str, worker_id: str, max_calls: int, env: dict[str, str] | None, agent: Path
) -> Server:
    port = free_port()
    return _spawn(
        [sys.executable, "-m", "switchboard.cli", "worker", "--port", str(port), "--worker-id", worker_id,
         "--max-calls", str(max_calls), "--agent", str(agent)],
        worker_id, port,
        {"SWITCHBOARD_REDIS_URL": redis_url, "SWITCHBOARD_INFERENCE_THREADS": "1",
         # Headroom depends on how busy the machine is: tests that are not about admission
         # admit by slots; tests of admission set it (tests/test_admission*.py).
         "SWITCHBOARD_ADMISSION": "slots", **(env or {})},
    )


def start_worker(
    redis_url: str, worker_id: str, max_calls: int = 2, env: dict[str, str] | None = None, agent: Path = TEST_AGENT
) -> Server:
    return _healthy_or_stopped(_spawn_worker(redis_url, worker_id, max_calls, env, agent), "/health")


class ServerGroup:
    """Servers started together and stopped together (in reverse), whatever fails on the way:
    a fixture that raises between two starts must not leave the first ones running."""

    def __init__(self) -> None:
        self._servers: list[Server | RedisServer] = []

    def add(self, server):
        self._servers.append(server)
        return server

    def start_workers(
        self, redis_url: str, worker_ids: list[str], max_calls: int = 2, env: dict[str, str] | None = None,
        agent: Path = TEST_AGENT,
    ) -> list[Server]:
        """Workers loading their models side by side, not one after another."""
        workers = [self.add(_spawn_worker(redis_url, w, max_calls, env, agent)) for w in worker_ids]
        for worker in workers:
            wait_healthy(worker.base_url, worker.process)
        return workers

    def release(self) -> None:
        """Everything started: the caller stops the servers from now on."""
        self._servers.clear()

    def stop(self) -> None:
        for server in reversed(self._servers):
            try:
                server.stop()
            except Exception as e:  # the others must still be stopped
                print(f"stopping {server}: {e}")
        self._servers.clear()

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()


def wait_for(condition, limit_secs: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``condition()`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + limit_secs
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {limit_secs} s")


# -- The shared stack: one real pool for every end-to-end test that can share it --------------

# Operator keys of the shared stack, all accepted at once (tests/test_operator_auth.py): the
# suite's own key and a rotation pair in SWITCHBOARD_API_KEYS, a key in the single-key setting,
# and one configured only as its SHA-256 digest.
ROTATING_KEYS = ("old-operator-key", "new-operator-key")
LEGACY_KEY = "legacy-key"
HASHED_ONLY_KEY = "only-its-hash-is-set"
SHARED_WORKER = "web-w1"


@dataclass
class Stack:
    """Redis, an orchestrator and one worker (one slot: a second call finds the pool full)."""

    redis: RedisServer
    orchestrator: Server
    worker: Server

    @property
    def url(self) -> str:
        return self.orchestrator.base_url

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/stats", headers=OPERATOR, timeout=5).json()

    def logs(self) -> str:
        return f"--- orchestrator ---\n{self.orchestrator.log()[-4000:]}\n--- worker ---\n{self.worker.log()[-8000:]}"

    def stop(self) -> None:
        """For a stack of a test's own (the shared one is stopped by its fixture)."""
        self.worker.stop()
        self.orchestrator.stop()
        self.redis.stop()


def stack_env(redis_url: str) -> dict[str, str]:
    import hashlib

    return {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_INFERENCE_THREADS": "1",
        "SWITCHBOARD_ADMISSION": "slots",  # as _spawn_worker's: headroom tests set it
        "SWITCHBOARD_LOG_LEVEL": "INFO",  # DEBUG would log every RTP packet aiortc sends
        "SWITCHBOARD_API_KEYS": ", ".join([API_KEY, *ROTATING_KEYS]),
        "SWITCHBOARD_API_KEY": LEGACY_KEY,
        "SWITCHBOARD_API_KEY_HASHES": hashlib.sha256(HASHED_ONLY_KEY.encode()).hexdigest(),
    }


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Started by the first test that asks, stopped at the end of the session: tests share it
    through distinct call ids, never by changing its settings."""
    with ServerGroup() as group:
        redis = group.add(start_redis(tmp_path_factory.mktemp("shared-redis")))
        env = stack_env(redis.url)
        orchestrator = group.add(start_orchestrator(redis.url, env))
        worker = group.add(start_worker(redis.url, SHARED_WORKER, max_calls=1, env=env))
        stack = Stack(redis, orchestrator, worker)
        wait_for(lambda: len(stack.stats()["workers"]) == 1, 30, what="the shared worker registered")
        pids = [server.process.pid for server in (redis, orchestrator, worker)]
        for pid in pids:
            process_guard.own_for_session(pid)
        yield stack
        for pid in pids:
            process_guard.release(pid)


# -- The shared signed agent: a standalone server set up as production runs it with Twilio -----

TWILIO_ACCOUNT_SID = "AC" + "1" * 32
TWILIO_AUTH_TOKEN = "call-control-test-token"
TOOL_SECRET = "tool-signing-test-secret"
OUTBOUND_FROM = "+15005550101"  # tests/agents/numbers/call_control.yaml's number
BUSY_TARGETS = ("sip:busy@desk.example.com", "+15005550301")  # transfers to these get busy


@dataclass
class SignedAgent:
    """``switchboard serve`` checking Twilio signatures, hanging up and transferring through the
    Twilio REST emulator, with an agent per dialed number from a directory a test may edit
    (reloaded every 0.2 s); numbers nobody claims get the speech-clip test agent."""

    server: Server
    twilio: Server
    agents_dir: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="session")
def signed_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedAgent]:
    import shutil

    agents_dir = Path(shutil.copytree(REPO / "tests" / "agents" / "numbers", tmp_path_factory.mktemp("agents") / "numbers"))
    with ServerGroup() as group:
        port = free_port()
        twilio = group.add(_start(
            [sys.executable, "-m", "switchboard.emulators", "twilio", "--port", str(port),
             "--account-sid", TWILIO_ACCOUNT_SID, "--auth-token", TWILIO_AUTH_TOKEN,
             *[arg for target in BUSY_TARGETS for arg in ("--dial-outcome", f"{target}=busy")]],
            "emulator-twilio", "/health", port, None,
        ))  # fmt: skip
        server = group.add(start_agent_server(env={
            "SWITCHBOARD_AGENTS_DIR": str(agents_dir),
            "SWITCHBOARD_AGENTS_RELOAD_SECS": "0.2",
            "SWITCHBOARD_OUTBOUND_FROM": OUTBOUND_FROM,
            "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
            "SWITCHBOARD_TWILIO_API_URL": twilio.base_url,
            "SWITCHBOARD_TOOL_SIGNING_SECRET": TOOL_SECRET,
        }))  # fmt: skip
        pids = [twilio.process.pid, server.process.pid]
        for pid in pids:
            process_guard.own_for_session(pid)
        yield SignedAgent(server, twilio, agents_dir)
        for pid in pids:
            process_guard.release(pid)


# -- Twilio media stream messages, as Twilio sends them --------------------------------------


def twilio_connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def twilio_start(call_sid: str, stream_sid: str, params: dict[str, str] | None = None) -> str:
    start = {"streamSid": stream_sid, "callSid": call_sid, "accountSid": "AC" + "0" * 32,
             "tracks": ["inbound"], "customParameters": {"CallSid": call_sid, **(params or {})},
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": start})


def twilio_stop(call_sid: str, stream_sid: str) -> str:
    return json.dumps({"event": "stop", "streamSid": stream_sid, "stop": {"callSid": call_sid}})


async def first_media(ws, limit_secs: float = 20.0) -> dict:
    """The first audio the agent sends on a Twilio stream (its greeting): proof the call runs."""
    async with asyncio.timeout(limit_secs):
        while (message := json.loads(await ws.recv()))["event"] != "media":
            pass
    return message


# -- What every end-to-end test reads: metrics and call records ------------------------------


@dataclass(frozen=True)
class Metrics:
    """One scrape of a server's ``/metrics``."""

    exposition: str

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly these labels (0 if the server has not counted one)."""
        return next((value for found, value in self.samples(name) if found == labels), 0.0)

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample called ``name`` (``x_total``, ``x_bucket``...), with its labels."""
        return [
            (sample.labels, sample.value)
            for family in text_string_to_metric_families(self.exposition)
            for sample in family.samples
            if sample.name == name
        ]


def scrape_metrics(base_url: str, headers: dict[str, str] | None = None) -> Metrics:
    """``GET /metrics`` of a server under test, with the operator key."""
    response = httpx.get(f"{base_url}/metrics", headers=headers or OPERATOR, timeout=5)
    response.raise_for_status()
    return Metrics(response.text)


def metric(base_url: str, name: str, headers: dict[str, str] | None = None, **labels: str) -> float:
    """One sample of a server's metrics, scraped now."""
    return scrape_metrics(base_url, headers).value(name, **labels)


_records_store = None


async def stored_call(call_sid: str, limit_secs: float = 30.0):
    """The call's record as the servers under test stored it (in the background, after the
    call): what the agent said and did, read instead of transcribing its audio."""
    global _records_store
    from switchboard.records.storage import LocalRecordingStorage
    from switchboard.records.store import CallStore

    if _records_store is None:
        RECORDS_DIR.mkdir(parents=True, exist_ok=True)
        _records_store = CallStore(SERVER_ENV["SWITCHBOARD_DATABASE_URL"], LocalRecordingStorage(RECORDS_DIR / "recordings"))
        await _records_store.open()
    call_id = call_sid if is_call_id(call_sid) else call_id_for_twilio(call_sid)
    async with asyncio.timeout(limit_secs):
        # Another process writes it: polled.
        while (record := await _records_store.get(call_id)) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return record


def agent_lines(record) -> list[str]:
    """What the agent said on a stored call, in order (the greeting first)."""
    return [entry.text for entry in record.transcript if entry.role == "agent"]


def event_names(record) -> list[str]:
    """The kinds of a stored call's events (the call log's), in order."""
    return [e.event for e in record.events]


# -- Parallel runs: `make test` shares the modules between pytest-xdist workers (module_order) --


@pytest.fixture(scope="module", autouse=True)
def module_turn(request: pytest.FixtureRequest) -> Iterator[None]:
    """A timed module runs with no call module beside it (tests/module_order.py)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    with module_order.module_turn(request.module.__name__, LOG_DIR.parent):
        yield


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Whole modules, longest first, timed ones alone (tests/module_order.py)."""
    if config.getvalue("dist") in ("loadfile", "loadgroup"):
        return module_order.make_scheduler(config, log)
    return None


# -- No test leaves a process behind (tests/process_guard.py) --------------------------------


@pytest.fixture(scope="module", autouse=True)
def no_process_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each module (its fixtures stopped), nothing it started may still run."""
    yield
    left = process_guard.leftovers()
    deadline = time.monotonic() + 3  # a process signalled a moment ago may be exiting
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = process_guard.leftovers()
    if left:
        process_guard.kill(left)
        pytest.fail(
            f"{request.module.__name__} left {len(left)} process(es) running (now killed):\n"
            + "\n".join(f"  {p}" for p in left),
            pytrace=False,
        )


_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_leaks_of_workers: list[str] = []  # reported by pytest-xdist's workers to the process that ran them


def _runs_xdist_workers(config: pytest.Config) -> bool:
    return not _XDIST_WORKER and config.pluginmanager.has_plugin("dsession")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Session-scoped servers are stopped by now: anything still running is a leak. Under
    pytest-xdist each worker checks its own processes and hands its finding to the controller."""
    lines = list(_leaks_of_workers)
    if not _runs_xdist_workers(session.config):
        left = process_guard.leftovers(include_session_owned=True)
        if left:
            process_guard.kill(left)
            lines.append(f"the test session{f' {_XDIST_WORKER}' if _XDIST_WORKER else ''} left {len(left)} process(es) running (now killed):")
            lines += [f"  {p}" for p in left]
    if not lines:
        return
    if _XDIST_WORKER:
        session.config.workeroutput["switchboard_leftovers"] = lines  # type: ignore[attr-defined]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """A pytest-xdist worker finished: keep what its leak check found (see above)."""
    _leaks_of_workers.extend(getattr(node, "workeroutput", {}).get("switchboard_leftovers", []))


# Real databases (SQLite, PostgreSQL) for the call-record tests.
from records_db import database_url, postgres  # noqa: E402, F401
