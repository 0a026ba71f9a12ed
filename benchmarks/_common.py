"""Helpers shared by the benchmarks: servers on loopback, the load-test stack, /proc sampling,
percentiles, results and docs."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np

if TYPE_CHECKING:
    from switchboard.telephony.livekit_local import LocalLiveKit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PERFORMANCE_DOC = REPO / "docs" / "performance.md"
IMG = REPO / "docs" / "img"
# The agent whose intents match the speech clips (tests and benchmarks share it).
TEST_AGENT = REPO / "tests" / "agents" / "speech_clips.yaml"
SHARED = Path(os.environ.get("SWITCHBOARD_SHARED_DIR", REPO.parent / "shared"))
CLIPS = REPO / "benchmarks" / "clips"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SECRETS = {"DEEPGRAM_API_KEY": "dg-bench", "ELEVENLABS_API_KEY": "el-bench", "OPENAI_API_KEY": "sk-bench"}
# What the emulated Deepgram "hears", in order, per connection: ordinary caller requests.
TRANSCRIPTS = ["I would like to book an appointment.", "What time do you open on Saturday?",
               "Can I pay my bill online?", "Thank you, that is all."]
# Load-test stack configurations: ``cloud`` is the architecture document's (Deepgram + ElevenLabs
# + scripted, providers emulated), ``cloud-llm`` adds the emulated LLM, ``offline`` uses no provider.
CONFIGS = {
    "cloud": {"SWITCHBOARD_STT_ENGINE": "deepgram", "SWITCHBOARD_TTS_ENGINE": "elevenlabs",
              "SWITCHBOARD_RESPONDER": "scripted"},
    "cloud-llm": {"SWITCHBOARD_STT_ENGINE": "deepgram", "SWITCHBOARD_TTS_ENGINE": "elevenlabs",
                  "SWITCHBOARD_RESPONDER": "openai"},
    "offline": {"SWITCHBOARD_STT_ENGINE": "whisper", "SWITCHBOARD_TTS_ENGINE": "piper",
                "SWITCHBOARD_RESPONDER": "scripted"},
}
EMULATORS = {"cloud": ("deepgram", "elevenlabs"), "cloud-llm": ("deepgram", "elevenlabs", "llm"), "offline": ()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A busy machine (or `nice`) loads the models slower: SWITCHBOARD_BENCH_START_SECS gives it longer.
START_LIMIT_SECS = float(os.environ.get("SWITCHBOARD_BENCH_START_SECS", "120"))


def start_process(argv: list[str], health_url: str, log_path: Path, env: dict[str, str] | None = None,
                  limit_secs: float = START_LIMIT_SECS) -> subprocess.Popen:
    """Start a server and wait until its health URL answers 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + limit_secs
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{argv} exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(health_url, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise TimeoutError(f"{health_url} not healthy after {limit_secs} s")


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "switchboard.cli", *args]


def summarize(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "max": None}
    a = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "mean": round(float(a.mean()), 1),
        "max": round(float(a.max()), 1),
    }


def scrape_metrics(url: str) -> str | None:
    """A process's ``/metrics`` text; None if it does not answer (stopped, or killed by a drill)."""
    try:
        return httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def update_doc_section(name: str, markdown: str) -> None:
    """Replace the section between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    text = PERFORMANCE_DOC.read_text() if PERFORMANCE_DOC.exists() else "# Performance\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _m: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    PERFORMANCE_DOC.write_text(text)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLOCK_TICKS
    except (OSError, IndexError):
        return 0.0


def proc_rss_bytes(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0.0


def proc_threads(pid: int) -> int:
    try:
        return int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)[1])
    except (OSError, TypeError):
        return 0


def proc_fds(pid: int) -> int:
    """Open file descriptors (sockets included) of a process."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _tcp_sockets() -> dict[str, tuple[int, int, str]]:
    """Socket inode -> (local port, remote port, state) of every TCP socket on the machine."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            out[f[9]] = (int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16),
                         "listen" if f[3] == "0A" else "open")
    return out


def socket_ports(pid: int) -> set[int]:
    """The local UDP and TCP ports a process has open."""
    inodes = {t[8:-1] for t in _fd_targets(pid) if t.startswith("socket:[")}
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6", "/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[9] in inodes:
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def _fd_targets(pid: int) -> list[str]:
    targets = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
    except OSError:
        pass
    return targets


def describe_fds(pids: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per process, its open fds by kind; a TCP socket is named by the process at its other
    end (``to redis``, ``from orchestrator`` ...), found through the listening ports."""
    tcp = _tcp_sockets()
    targets = {label: _fd_targets(pid) for label, pid in pids.items()}
    listening, local_ports = {}, {}
    for label, ts in targets.items():
        for t in ts:
            inode = t[8:-1] if t.startswith("socket:[") else None
            if inode in tcp:
                (listening if tcp[inode][2] == "listen" else local_ports)[tcp[inode][0]] = label
    out = {}
    for label, ts in targets.items():
        kinds: dict[str, int] = {}
        for t in ts:
            inode = t[8:-1] if t.startswith("socket:[") else None
            if inode in tcp:
                local, remote, state = tcp[inode]
                if state == "listen":
                    kind = "tcp listening"
                elif remote in listening and local not in listening:
                    kind = f"tcp to {listening[remote]}"
                else:
                    kind = f"tcp from {local_ports.get(remote, f'port {remote}')}"
            elif inode is not None:
                kind = "socket (unix or other)"
            elif t.startswith("/"):
                kind = f"file {t}"
            else:
                kind = re.sub(r"\d+", "N", t.split(":", 1)[0])
            kinds[kind] = kinds.get(kind, 0) + 1
        out[label] = dict(sorted(kinds.items()))
    return out


def thread_names(pids: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per process, its OS threads by name (/proc/PID/task/*/comm)."""
    out = {}
    for label, pid in pids.items():
        names: dict[str, int] = {}
        for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
            try:
                name = comm.read_text().strip()
            except OSError:
                continue
            names[name] = names.get(name, 0) + 1
        out[label] = dict(sorted(names.items()))
    return out


@dataclass
class Role:
    """The processes of one role of the stack (workers, emulators ...), each with a label."""

    name: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def add(self, label: str, process: subprocess.Popen) -> None:
        self.processes.append(process)
        self.labels.append(label)

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_s(p.pid) for p in self.processes)

    def rss_mb(self) -> float:
        return sum(proc_rss_bytes(p.pid) for p in self.processes) / 1e6

    def threads(self) -> int:
        return sum(proc_threads(p.pid) for p in self.processes)


@dataclass
class LiveKitBeside:
    """The real LiveKit server and LiveKit SIP beside the stack (``start_stack(livekit=...)``),
    answering SIP calls to ``numbers`` in ``call-…`` rooms; ``local`` is set once started."""

    data_dir: Path
    numbers: list[str]
    local: LocalLiveKit | None = None

    def prepare(self, redis_url: str, orchestrator_url: str) -> dict[str, str]:
        """Ports, keys and config files; returns what the stack's processes need to reach it."""
        from switchboard.telephony import livekit_local

        ports = livekit_local.loopback_ports()
        keys = livekit_local.deployment_keys(self.data_dir / "livekit-keys")
        self.local = livekit_local.prepare(
            self.data_dir / "livekit", ports, keys, redis_url, f"{orchestrator_url}/webhooks/livekit")
        return self.local.env()

    def start(self, roles: dict[str, Role], logs: Path) -> None:
        from switchboard.telephony import livekit_local

        assert self.local is not None
        server, sip = livekit_local.start_local(self.local, logs)
        roles["livekit server"].add("livekit-server", server)
        roles["livekit sip"].add("livekit-sip", sip)

    def setup(self) -> None:
        """The inbound trunk and the dispatch rule (after the orchestrator is up: the first
        webhooks may come as soon as the rule exists)."""
        import asyncio

        from switchboard.settings import Settings
        from switchboard.telephony.livekit_setup import ensure_sip_setup

        assert self.local is not None
        asyncio.run(ensure_sip_setup(Settings(**self.local.env()), self.numbers))

    def sip_uri(self, number: str) -> str:
        assert self.local is not None
        return f"sip:{number}@{self.local.ports.sip_uri_host}"


def start_stack(config: str, workers: int, max_calls: int, tmp: Path, *, logs: Path,
                worker_prefix: str = "cap", env_extra: dict[str, str] | None = None,
                worker_command: Callable[[int, list[str]], list[str]] | None = None,
                redis_aof: bool = False, livekit: LiveKitBeside | None = None,
                env_all: dict[str, str] | None = None, agent: Path = TEST_AGENT,
                ) -> tuple[str, list[Role], list[str]]:
    """Redis, the configuration's emulators, one orchestrator and N workers on loopback; with
    ``livekit``, the LiveKit server and LiveKit SIP too (roles ``livekit server``, ``livekit sip``).

    Returns the orchestrator's URL, the roles (redis, [livekit server, livekit sip,] emulators,
    orchestrator, workers) and the workers' URLs, once the orchestrator sees every worker.
    ``env_extra`` goes to the workers only, ``env_all`` to the orchestrator and the workers;
    ``worker_command(i, cli_args)`` gives worker i's argv (default ``cli(*cli_args)``); the
    workers answer as ``agent``.
    """
    roles = {name: Role(name) for name in ("redis", "livekit server", "livekit sip", "emulators",
                                           "orchestrator", "workers") if livekit or "livekit" not in name}
    try:
        url, worker_urls = _start_roles(roles, config, workers, max_calls, tmp, logs, worker_prefix, env_extra,
                                        worker_command, redis_aof, livekit, env_all, agent)
    except BaseException:
        stop_stack(list(roles.values()))
        raise
    return url, list(roles.values()), worker_urls


def _start_roles(roles: dict[str, Role], config: str, workers: int, max_calls: int, tmp: Path, logs: Path,
                 worker_prefix: str, env_extra: dict[str, str] | None,
                 worker_command: Callable[[int, list[str]], list[str]] | None, redis_aof: bool,
                 livekit: LiveKitBeside | None, env_all: dict[str, str] | None,
                 agent: Path) -> tuple[str, list[str]]:
    redis_port = free_port()
    # With ``redis_aof`` Redis keeps an append-only file (as ``switchboard up`` runs it), so it can be
    # restarted (same argv) without losing calls' state.
    persistence = ["--appendonly", "yes", "--dir", str(tmp)] if redis_aof else ["--appendonly", "no"]
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                              "--bind", "127.0.0.1", "--save", "", *persistence], stdout=subprocess.DEVNULL)
    transcripts = tmp / "transcripts.txt"
    transcripts.write_text("\n".join(TRANSCRIPTS * 20) + "\n")
    roles["redis"].add("redis", redis)
    urls = {}
    for provider in EMULATORS[config]:
        extra = ["--transcripts", str(transcripts)] if provider == "deepgram" else []
        port = free_port()
        urls[provider] = f"http://127.0.0.1:{port}"
        roles["emulators"].add(provider, start_process(
            cli("emulate", provider, "--port", str(port), *extra), f"{urls[provider]}/health", logs / f"{provider}.log"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **SECRETS,
        **CONFIGS[config],
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "SWITCHBOARD_MAX_CALLS": str(max_calls),
        # The sweeps measure what a pool holds when every call is let in (overload.py sets headroom).
        "SWITCHBOARD_ADMISSION": "slots",
        "SWITCHBOARD_INFERENCE_THREADS": "1",
        # 40 ms input chunks: half the frames through each call's pipeline for ~10 ms of latency.
        "SWITCHBOARD_INPUT_FRAME_MS": os.environ.get("SWITCHBOARD_INPUT_FRAME_MS", "40"),
        **(livekit.prepare(f"redis://127.0.0.1:{redis_port}/0", url) if livekit else {}),
        **(env_all or {}),
    }
    if "deepgram" in urls:
        env["SWITCHBOARD_DEEPGRAM_URL"] = urls["deepgram"].replace("http://", "ws://")
        env["SWITCHBOARD_ELEVENLABS_URL"] = urls["elevenlabs"].replace("http://", "ws://")
    if "llm" in urls:
        env["SWITCHBOARD_LLM_BASE_URL"] = urls["llm"] + "/v1"
    roles["orchestrator"].add("orchestrator", start_process(
        cli("orchestrator", "--port", str(port)), f"{url}/health/live", logs / "orchestrator.log", env))
    if livekit:  # after the orchestrator: its webhooks have somewhere to go
        livekit.start(roles, logs)
    worker_urls = []
    for i in range(workers):
        wport = free_port()
        worker_urls.append(f"http://127.0.0.1:{wport}")
        args = ["worker", "--port", str(wport), "--worker-id", f"{worker_prefix}-{i}", "--agent", str(agent)]
        roles["workers"].add(f"worker{i}", start_process(
            worker_command(i, args) if worker_command else cli(*args),
            f"http://127.0.0.1:{wport}/health", logs / f"worker{i}.log", {**env, **(env_extra or {})}))
    # A worker answers /health before its first heartbeat reaches the orchestrator; calls placed
    # before that would be told every agent is busy.
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/health", timeout=5).json().get("live_workers", 0) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError("the orchestrator did not see every worker within 60 s")
        time.sleep(0.2)
    if livekit:
        livekit.setup()
    return url, worker_urls


def stop_stack(roles: list[Role]) -> None:
    """Stop the stack's processes, workers first."""
    for role in reversed(roles):
        for p in role.processes:
            stop_process(p)
