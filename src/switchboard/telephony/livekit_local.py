"""A LiveKit server and LiveKit SIP on this machine, on loopback: their config files, command
lines and readiness checks, for ``switchboard up --livekit`` and the SIP tests.

Both are the real Go programs (``scripts/install_livekit.sh`` builds them into
``SWITCHBOARD_LIVEKIT_BIN_DIR``). They share the stack's Redis (LiveKit SIP finds the server
through it), the server posts its signed webhooks to the orchestrator's ``/webhooks/livekit``,
and LiveKit SIP answers SIP on ``127.0.0.1:sip_port`` with RTP in its own port range.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

from switchboard.errors import ConfigError

BIN_DIR = Path(
    os.environ.get("SWITCHBOARD_LIVEKIT_BIN_DIR")
    or Path(os.environ.get("SWITCHBOARD_CACHE_DIR") or Path.home() / ".cache" / "switchboard") / "livekit" / "bin"
)
HOST = "127.0.0.1"
# LiveKit refuses secrets shorter than this outside its --dev mode.
MIN_SECRET_CHARS = 32


def binary(name: str) -> Path | None:
    """``livekit-server`` or ``livekit-sip``: the cached build, else one on PATH."""
    built = BIN_DIR / name
    if built.exists() and os.access(built, os.X_OK):
        return built
    found = shutil.which(name)
    return Path(found) if found else None


def binaries_missing() -> list[str]:
    return [name for name in ("livekit-server", "livekit-sip") if binary(name) is None]


@dataclass(frozen=True)
class LiveKitPorts:
    """Where the local LiveKit listens; every port on 127.0.0.1."""

    http: int = 7880  # the server API and WebSocket signalling (LIVEKIT_URL)
    rtc_tcp: int = 7881  # WebRTC over TCP
    rtc_udp_start: int = 50000  # WebRTC over UDP: one port per participant
    rtc_udp_end: int = 50099
    sip: int = 5060
    rtp_start: int = 10000  # LiveKit SIP's RTP: one port per call
    rtp_end: int = 10099

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.http}"

    @property
    def sip_uri_host(self) -> str:
        return f"{HOST}:{self.sip}"


@dataclass(frozen=True)
class LiveKitKeys:
    api_key: str
    api_secret: str


def deployment_keys(path: Path) -> LiveKitKeys:
    """This deployment's own API key and secret, made once (owner-only file) and then kept."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"API{secrets.token_hex(6)}: {secrets.token_urlsafe(36)}\n")
    key, _, secret = path.read_text().strip().partition(": ")
    if not key or len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"{path}: expected one 'key: secret' line with a secret of {MIN_SECRET_CHARS}+ characters")
    return LiveKitKeys(key, secret)


def _redis_config(redis_url: str) -> dict:
    parts = urlsplit(redis_url)
    config: dict = {"address": f"{parts.hostname or HOST}:{parts.port or 6379}"}
    db = parts.path.lstrip("/")
    if db:
        config["db"] = int(db)
    if parts.password:
        config["password"] = parts.password
    return config


def server_config(ports: LiveKitPorts, keys: LiveKitKeys, redis_url: str, webhook_url: str) -> dict:
    """The LiveKit server's YAML config: loopback only, webhooks to the orchestrator."""
    return {
        "port": ports.http,
        "bind_addresses": [HOST],
        "rtc": {
            "tcp_port": ports.rtc_tcp,
            "port_range_start": ports.rtc_udp_start,
            "port_range_end": ports.rtc_udp_end,
            "use_external_ip": False,
            "node_ip": HOST,
            # Peers on this machine (the workers) reach it over loopback only.
            "enable_loopback_candidate": True,
        },
        "redis": _redis_config(redis_url),
        "keys": {keys.api_key: keys.api_secret},
        "webhook": {"api_key": keys.api_key, "urls": [webhook_url]},
        "logging": {"level": "info", "json": False},
        # A call room whose caller left is closed at once: nobody else joins it later.
        "room": {"empty_timeout": 30, "departure_timeout": 1},
    }


def sip_config(ports: LiveKitPorts, keys: LiveKitKeys, redis_url: str) -> dict:
    """LiveKit SIP's YAML config: SIP and RTP on 127.0.0.1, the server through the same Redis."""
    return {
        "api_key": keys.api_key,
        "api_secret": keys.api_secret,
        "ws_url": ports.url,
        "redis": _redis_config(redis_url),
        "sip_port": ports.sip,
        "listen_ip": HOST,
        "nat_1_to_1_ip": HOST,  # the address put in SDP and Contact headers
        "use_external_ip": False,
        "rtp_port": f"{ports.rtp_start}-{ports.rtp_end}",
        # Calls are refused above this CPU share; on a machine it shares with the agents, the
        # agents are the load, and a refused INVITE would only hide that: never refuse here.
        "max_cpu_utilization": 1.0,
        "logging": {"level": "info", "json": False},
    }


@dataclass(frozen=True)
class LocalLiveKit:
    """The files and command lines of one local LiveKit server and LiveKit SIP."""

    ports: LiveKitPorts
    keys: LiveKitKeys
    server_config_path: Path
    sip_config_path: Path

    def server_argv(self) -> list[str]:
        return [str(_require("livekit-server")), "--config", str(self.server_config_path)]

    def sip_argv(self) -> list[str]:
        return [str(_require("livekit-sip")), "--config", str(self.sip_config_path)]

    def env(self) -> dict[str, str]:
        """What the stack's own processes need to reach it."""
        return {
            "LIVEKIT_URL": self.ports.url,
            "LIVEKIT_API_KEY": self.keys.api_key,
            "LIVEKIT_API_SECRET": self.keys.api_secret,
        }


def prepare(
    data_dir: Path, ports: LiveKitPorts, keys: LiveKitKeys, redis_url: str, webhook_url: str
) -> LocalLiveKit:
    """Write both config files (owner-only: they hold the secret) under ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server_path = data_dir / "livekit-server.yaml"
    sip_path = data_dir / "livekit-sip.yaml"
    for path, config in (
        (server_path, server_config(ports, keys, redis_url, webhook_url)),
        (sip_path, sip_config(ports, keys, redis_url)),
    ):
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return LocalLiveKit(ports, keys, server_path, sip_path)


def _require(name: str) -> Path:
    path = binary(name)
    if path is None:
        raise ConfigError(f"{name} not found in {BIN_DIR} or PATH: run scripts/install_livekit.sh (make setup does)")
    return path


def server_ready(ports: LiveKitPorts) -> bool:
    """The server answers HTTP on its port (its root path says OK once it is serving)."""
    try:
        return httpx.get(f"http://{HOST}:{ports.http}/", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def sip_ready(ports: LiveKitPorts, timeout: float = 1.0) -> bool:
    """LiveKit SIP answers a SIP OPTIONS on its UDP port (what carriers probe it with)."""
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{HOST}:{ports.sip} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:health@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{HOST}:{ports.sip}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@{HOST}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        try:
            sock.sendto(request.encode(), (HOST, ports.sip))
            reply, _ = sock.recvfrom(4096)
        except OSError:
            return False
    return reply.startswith(b"SIP/2.0 ")


def wait_until(check, limit_secs: float, what: str, alive=lambda: True) -> None:
    deadline = time.monotonic() + limit_secs
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited while starting")
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {limit_secs:.0f} s")
