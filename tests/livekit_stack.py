"""The architecture's own call path on loopback, for the LiveKit SIP tests: Redis, the real
LiveKit server and LiveKit SIP (``scripts/install_livekit.sh``), an orchestrator, two workers,
and two PJSIP phones (a caller, and a second phone: transfer target and outbound callee).

Started once per test module (a worker takes tens of seconds to load its models); every test
places its own calls on it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import (
    LOG_DIR,
    OPERATOR,
    SERVER_ENV,
    TEST_OPERATOR_RATE_LIMIT,
    RedisServer,
    Server,
    free_port,
    start_redis,
    wait_for,
    wait_healthy,
)
from switchboard.loadtest.sip_phone import Answer, SipLine, SipPhone, shared_line
from switchboard.telephony import livekit_local as local

OUR_NUMBER = "+15550100"  # the inbound trunk's number
CALLER_NUMBER = "+15105550100"
SECOND_NUMBER = "+15105550199"  # the second phone: transfer target and outbound callee

AGENT_YAML = """\
version: 1
name: LiveKit SIP test agent
numbers: ["{our_number}"]
greeting: Hello, this is the test line.
fallback: I am sorry, I did not understand that.
keypad:
  options: {{"1": directions, "4": account, "0": transfer, "2": warm_transfer, "9": goodbye}}
intents:
  - name: directions
    phrases: [forward, meters, go]
    reply: Moving forward now.
  - name: account
    phrases: [account number]
    reply: Please enter your account number, then press the pound key.
    collect_digits:
      max_digits: 6
      terminator: "#"
      timeout_secs: 8
      reply: Thank you. I have account {{digits}}.
  - name: transfer
    phrases: [front desk]
    reply: Putting you through.
    transfer: "sip:{second_number}@127.0.0.1:{second_port}"
  - name: warm_transfer
    phrases: [supervisor]
    reply: Let me get the desk for you.
    transfer: "{second_number}"
    transfer_mode: warm
    transfer_summary: A caller is asking for the desk.
  - name: goodbye
    phrases: [horizon, distant]
    reply: Goodbye.
    end_call: true
"""


def require_binaries() -> None:
    """Skip when LiveKit is not built here, unless this is CI (where setup builds it)."""
    missing = local.binaries_missing()
    if not missing:
        return
    message = f"{', '.join(missing)} not built: run scripts/install_livekit.sh (make setup does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class LiveKitSipStack:
    redis: RedisServer
    livekit: local.LocalLiveKit
    orchestrator: Server
    workers: list[Server]
    line: SipLine
    caller: SipPhone
    second: SipPhone
    outbound_trunk: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.orchestrator.base_url

    @property
    def sip_uri(self) -> str:
        return f"sip:{OUR_NUMBER}@127.0.0.1:{self.livekit.ports.sip}"

    def record(self, call_id: str) -> dict:
        return httpx.get(f"{self.url}/calls/{call_id}", headers=OPERATOR, timeout=5).json()

    def saved_record(self, call_id: str, limit_secs: float = 20) -> dict:
        """The call's stored record (it is saved after the call ends)."""
        return wait_for(
            lambda: (r := self.record(call_id)).get("ended_at") and r, limit_secs, what=f"{call_id} saved"
        )

    def latest_call_id(self, after: set[str]) -> str:
        """The call id of the call that started since ``after`` was taken (see ``call_ids``)."""
        return wait_for(lambda: next(iter(self.call_ids() - after), None), 30, what="a new call")

    def call_ids(self) -> set[str]:
        page = httpx.get(f"{self.url}/calls", params={"limit": 100}, headers=OPERATOR, timeout=5).json()
        ids = {c["call_id"] for c in page["calls"]}
        import redis

        client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            ids |= {k.split(":")[2] for k in client.scan_iter("sb:call:*") if k.count(":") == 2}
        finally:
            client.close()
        return ids

    def diagnostics(self) -> str:
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            lines = [line for line in text.splitlines() if "pion" not in line and "GET /health" not in line]
            parts.append(f"--- {name} ---\n" + "\n".join(line[:300] for line in lines[-40:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for phone in (self.caller, self.second):  # the line is the process's: it stays
            for call in phone.calls:
                if not call.ended:
                    call.hang_up()
        for worker in self.workers:
            worker.stop()
        self.orchestrator.stop()
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.redis.stop()


def _spawn(argv: list[str], name: str, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, log_path


def start_livekit_sip_stack(workers: int = 2) -> LiveKitSipStack:
    """Everything started in the order each piece needs the previous one."""
    require_binaries()
    from switchboard.settings import Settings
    from switchboard.telephony.livekit_setup import ensure_sip_setup

    data_dir = Path(tempfile.mkdtemp(prefix="sb-livekit-"))
    redis = start_redis(data_dir)
    started: list[subprocess.Popen] = []
    servers: list[Server] = []
    line = shared_line()
    try:
        caller = line.phone(CALLER_NUMBER, free_port())
        second = line.phone(SECOND_NUMBER, free_port())
        ports = local.loopback_ports()
        keys = local.deployment_keys(data_dir / "livekit-keys")
        orchestrator_port = free_port()
        livekit = local.prepare(
            data_dir, ports, keys, redis.url, f"http://127.0.0.1:{orchestrator_port}/webhooks/livekit"
        )
        started += local.start_local(livekit, LOG_DIR)
        logs: dict[str, Path] = {
            name: LOG_DIR / f"{name}-{ports.http}.log" for name in ("livekit-server", "livekit-sip")
        }

        settings = Settings(**livekit.env())
        setup = asyncio.run(
            ensure_sip_setup(
                settings, [OUR_NUMBER],
                outbound_address=f"127.0.0.1:{second.port}", outbound_numbers=[OUR_NUMBER],
                carrier_addresses=["127.0.0.1/32"],
            )
        )  # fmt: skip
        assert setup.outbound_trunk_id is not None
        agent = data_dir / "agent.yaml"
        agent.write_text(
            AGENT_YAML.format(our_number=OUR_NUMBER, second_number=SECOND_NUMBER, second_port=second.port)
        )
        env = {
            **os.environ,
            "SWITCHBOARD_LOG_LEVEL": "INFO",
            **SERVER_ENV,
            **TEST_OPERATOR_RATE_LIMIT,
            **livekit.env(),
            "SWITCHBOARD_REDIS_URL": redis.url,
            # Its own call history: the session's is shared with modules running beside this one,
            # whose calls would read as calls of this stack.
            "SWITCHBOARD_DATABASE_URL": f"sqlite:///{data_dir}/switchboard.db",
            "SWITCHBOARD_RECORDINGS_URL": str(data_dir / "recordings"),
            "SWITCHBOARD_INFERENCE_THREADS": "1",
            "SWITCHBOARD_LIVEKIT_OUTBOUND_TRUNK": setup.outbound_trunk_id,
            "SWITCHBOARD_OUTBOUND_RING_SECS": "5",
            "SWITCHBOARD_TRANSFER_RING_SECS": "10",
            "SWITCHBOARD_AGENT_CONFIG": str(agent),
        }
        cli = [sys.executable, "-m", "switchboard.cli"]
        # All Python servers load at once: a worker's models take most of the start-up.
        planned = [("orchestrator", orchestrator_port, [*cli, "orchestrator", "--port", str(orchestrator_port)], "/health/live")]
        for i in range(workers):
            port = free_port()
            planned.append((f"lk-w{i + 1}", port, [*cli, "worker", "--port", str(port), "--worker-id", f"lk-w{i + 1}",
                                                   "--max-calls", "2"], "/health"))  # fmt: skip
        for name, port, argv, _ in planned:
            process, logs[name] = _spawn(argv, f"{name}-{port}", env)
            servers.append(Server(f"http://127.0.0.1:{port}", process, logs[name]))
        for server, (_, _, _, health) in zip(servers, planned, strict=True):
            wait_healthy(server.base_url, server.process, limit_secs=180, path=health)
        stack = LiveKitSipStack(
            redis, livekit, servers[0], servers[1:], line, caller, second, setup.outbound_trunk_id,
            started, logs,
        )  # fmt: skip
        wait_for(lambda: len(_live_workers(stack)) == workers, 60, what="workers registered")
        return stack
    except BaseException:
        for server in servers:
            server.stop()
        for process in started:
            process.terminate()
            process.wait(timeout=15)
        redis.stop()
        raise


def _live_workers(stack: LiveKitSipStack) -> list:
    return httpx.get(f"{stack.url}/stats", headers=OPERATOR, timeout=5).json().get("workers", [])


def reset_phones(stack: LiveKitSipStack) -> None:
    """Each test starts with both phones answering and no call up."""
    for phone in (stack.caller, stack.second):
        phone.answer = Answer.ANSWER
        for call in phone.calls:
            if not call.ended:
                call.hang_up()
