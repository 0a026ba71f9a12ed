"""What the media edge costs: added latency per frame and edge CPU per call, on loopback.

N synthetic Twilio streams (50 media frames/s each, 160-byte μ-law payloads whose first 8
bytes are the send time) go to a trivial echo worker, directly and through a real
orchestrator's ``/twilio/media`` edge (real Redis for the worker's registration). The echo
worker (its own process) sends media frames straight back, so an echoed frame crosses the
edge twice: the added round trip is edge RTT - direct RTT, and the added one-way delay (what
a caller's frame pays on its way to the worker, or an agent's on its way back) is half of it.
Edge CPU is the orchestrator process's user+system time over the measured window (idle rate
subtracted), per stream. Two traffic shapes: every 2nd frame echoed (an agent speaking all
the time: Pipecat sends its audio in 40 ms chunks, 25 frames/s) and every frame echoed (a
synthetic worst case, 50 frames/s each way). Edge and direct streams run at the same time, so
both see the same machine noise. A reference arm sends the same traffic through a bare TCP byte
splice (its own process): what an edge that stops parsing after ``start`` would cost.

    .venv/bin/python benchmarks/media_edge.py [--streams 10] [--secs 15] [--repeat 2]

Writes ``benchmarks/results/media_edge.json`` and the results table (between the
``media_edge`` markers) of the "Media edge relay" section of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from _common import (
    RESULTS,
    cli,
    free_port,
    start_process,
    stop_process,
    update_doc_section,
    write_result,
)
from dispatch import start_redis
from switchboard.call_ids import twilio_call_sid
from switchboard.dispatch import stream_tokens
from switchboard.dispatch.models import WorkerInfo
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.orchestrator.media_edge import STREAM_TOKEN_PARAM

SECRET = "bench-stream-secret"
WORKER_ID = "bench-echo"
FRAME_SECS = 0.020
WARMUP_SECS = 1.0
MAX_STREAMS = 10  # per arm: as many again go direct at the same time, 20 in all
_TICK = os.sysconf("SC_CLK_TCK")
# Traffic back to the caller, as a fraction of the 50 frames/s coming in. Pipecat's output
# transport sends the agent's audio in 40 ms chunks: an agent speaking all the time is every
# 2nd frame (a real call's upper bound); echoing every frame is the synthetic worst case.
SHAPES = {"agent_speaking": 2, "echo_every_frame": 1}


# -- the echo worker (run as its own process: `media_edge.py --echo-port P`) ----------------------


async def _echo(connection: ServerConnection) -> None:
    """Send back every ``echoEvery``-th media frame (from the start message's customParameters)."""
    every, n = 1, 0
    async for message in connection:
        if isinstance(message, str) and message.startswith('{"event":"media"'):
            n += 1
            if n % every == 0:
                await connection.send(message)
        elif '"start"' in message:
            every = int(json.loads(message)["start"]["customParameters"].get("echoEvery", 1))


async def run_echo_worker(port: int) -> None:
    async with serve(_echo, "127.0.0.1", port, compression=None) as server:
        await server.serve_forever()


# -- reference: a byte splice (what an edge that stops parsing after `start` would cost) ---------


class _Splice(asyncio.Protocol):
    """One side of a TCP byte relay: whatever arrives is written to the peer, unparsed."""

    def __init__(self, peer: _Splice | None = None):
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer.transport if self.peer else None
        if peer is None:
            self.pending.append(data)
        else:
            peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.close()


async def run_splice(port: int, target_port: int) -> None:
    loop = asyncio.get_running_loop()

    def accept() -> _Splice:
        front = _Splice()

        async def dial() -> None:
            _transport, back = await loop.create_connection(
                lambda: _Splice(front), "127.0.0.1", target_port
            )
            front.peer = back
            for data in front.pending:
                back.transport.write(data)  # type: ignore[union-attr]
            front.pending.clear()

        front.dialling = asyncio.ensure_future(dial())  # type: ignore[attr-defined]
        return front

    server = await loop.create_server(accept, "127.0.0.1", port)
    await server.serve_forever()


def wait_port(port: int, limit_secs: float = 30) -> None:
    deadline = time.monotonic() + limit_secs
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


# -- synthetic streams ----------------------------------------------------------------------------


def _media(n: int, stream_sid: str) -> str:
    payload = struct.pack("<q", time.perf_counter_ns()) + b"\xff" * 152
    media = {
        "track": "inbound",
        "chunk": str(n),
        "timestamp": str(n * 20),
        "payload": base64.b64encode(payload).decode(),
    }
    return json.dumps({"event": "media", "sequenceNumber": str(n + 2), "streamSid": stream_sid, "media": media},
                      separators=(",", ":"))  # fmt: skip


def _sent_at(message: str | bytes) -> int:
    payload = json.loads(message)["media"]["payload"]
    return struct.unpack("<q", base64.b64decode(payload)[:8])[0]


async def one_stream(url: str, token: str, echo_every: int, until: float, measure_from: float,
                     rtts: list[float]) -> None:  # fmt: skip
    stream_sid = "MZ" + uuid.uuid4().hex
    params = {STREAM_TOKEN_PARAM: token, "echoEvery": str(echo_every)}
    call_sid = twilio_call_sid(stream_tokens.read(SECRET, token).call_id)  # the token's own call
    start = {"streamSid": stream_sid, "callSid": call_sid, "accountSid": "AC" + "0" * 32,
             "tracks": ["inbound"], "customParameters": params,
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
    async with connect(url, compression=None, open_timeout=10) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(
            json.dumps(
                {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": start}
            )
        )

        async def receive() -> None:
            async for message in ws:
                now = time.perf_counter_ns()
                if now / 1e9 >= measure_from:
                    rtts.append((now - _sent_at(message)) / 1e6)

        receiver = asyncio.create_task(receive())
        loop = asyncio.get_running_loop()
        begun, n = loop.time(), 0
        while time.perf_counter() < until:
            await ws.send(_media(n, stream_sid))
            n += 1
            await asyncio.sleep(max(0.0, begun + n * FRAME_SECS - loop.time()))
        await asyncio.sleep(0.2)  # the last echoes
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process (``/proc/<pid>/stat`` utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def cpu_secs(pid: int) -> float:
    return sum(cpu_split(pid))


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        q: round(float(np.percentile(a, p)), 3) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))
    }


async def measure(
    urls: tuple[str, str], streams: int, secs: float, echo_every: int, edge_pid: int
) -> dict:
    """``streams`` streams through the edge and as many direct, at the same time (so both see the
    same machine noise), for ``secs``: RTT percentiles of each and the edge's CPU over the window."""
    rtts: dict[str, list[float]] = {"edge": [], "direct": []}
    now = time.perf_counter()
    measure_from, until = now + WARMUP_SECS, now + WARMUP_SECS + secs
    tasks = [
        asyncio.create_task(one_stream(url, stream_tokens.issue(SECRET, f"call-bench-{arm}-{i}", WORKER_ID, 300),
                                       echo_every, until, measure_from, rtts[arm]))
        for i in range(streams) for arm, url in zip(("edge", "direct"), urls, strict=True)
    ]  # fmt: skip
    await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
    (user_before, sys_before), wall_before = cpu_split(edge_pid), time.perf_counter()
    await asyncio.sleep(max(0.0, until - time.perf_counter()))
    (user_after, sys_after), wall_after = cpu_split(edge_pid), time.perf_counter()
    await asyncio.gather(*tasks)
    return {
        "echoed_frames": {arm: len(v) for arm, v in rtts.items()},
        "echoed_frames_expected": int(streams * secs / FRAME_SECS / echo_every),
        "rtt_ms": {arm: _percentiles(v) for arm, v in rtts.items()},
        "edge_cpu_secs": round(user_after - user_before + sys_after - sys_before, 3),
        "edge_cpu_system_secs": round(sys_after - sys_before, 3),  # kernel: sockets, loopback TCP
        "wall_secs": round(wall_after - wall_before, 3),
    }


async def run_shape(urls: tuple[str, str], edge_pid: int, streams: int, secs: float, echo_every: int,
                    idle_rate: float) -> dict:  # fmt: skip
    m = await measure(urls, streams, secs, echo_every, edge_pid)
    busy = m["edge_cpu_secs"] - idle_rate * m["wall_secs"]
    frames_per_sec = streams * (1 + 1 / echo_every) / FRAME_SECS  # relayed, both directions
    edge, direct = m["rtt_ms"]["edge"], m["rtt_ms"]["direct"]
    added = {q: round(edge[q] - direct[q], 3) for q in ("p50", "p95", "p99")}
    return {
        "echo_every": echo_every,
        "frames_per_sec_per_stream": {
            "to_worker": 1 / FRAME_SECS,
            "to_caller": 1 / FRAME_SECS / echo_every,
        },
        **m,
        "added_round_trip_ms": added,
        "added_one_way_ms": {q: round(v / 2, 3) for q, v in added.items()},
        "edge_cpu_pct_of_a_core_per_stream": round(100 * busy / m["wall_secs"] / streams, 3),
        "edge_cpu_us_per_relayed_frame": round(1e6 * busy / m["wall_secs"] / frames_per_sec, 1),
    }


async def run(streams: int, secs: float, repeat: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="sb-bench-edge-"))
    redis_process, redis_url = start_redis(work)
    echo_port, orchestrator_port = free_port(), free_port()
    echo = subprocess.Popen([sys.executable, __file__, "--echo-port", str(echo_port)])  # noqa: ASYNC220
    splice_port = free_port()
    splice = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, __file__, "--splice-port", str(splice_port), "--splice-to", str(echo_port)]
    )
    orchestrator = None
    try:
        wait_port(echo_port)
        wait_port(splice_port)
        env = {
            "SWITCHBOARD_REDIS_URL": redis_url,
            "SWITCHBOARD_STREAM_SECRET": SECRET,
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
        }
        orchestrator = start_process(cli("orchestrator", "--port", str(orchestrator_port)),
                                     f"http://127.0.0.1:{orchestrator_port}/health/live", work / "orchestrator.log", env)  # fmt: skip
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        now = time.time()
        info = WorkerInfo(worker_id=WORKER_ID, media_url=f"http://127.0.0.1:{echo_port}", capacity=0,
                          pid=echo.pid, started_at=now, heartbeat_at=now)  # fmt: skip
        await WorkerRegistry(client, worker_ttl_secs=3600).register(info)
        await client.aclose()
        urls = (
            f"ws://127.0.0.1:{orchestrator_port}/twilio/media",
            f"ws://127.0.0.1:{echo_port}/twilio/media/x",
        )
        runs = []
        for i in range(repeat):
            idle_before, t0 = cpu_secs(orchestrator.pid), time.perf_counter()
            await asyncio.sleep(3)
            idle_rate = (cpu_secs(orchestrator.pid) - idle_before) / (time.perf_counter() - t0)
            result = {
                "streams": streams,
                "secs": secs,
                "edge_idle_cpu_pct": round(100 * idle_rate, 3),
                "shapes": {},
            }
            for shape, every in SHAPES.items():
                result["shapes"][shape] = await run_shape(
                    urls, orchestrator.pid, streams, secs, every, idle_rate
                )
            # Reference, not the product: the same traffic through a bare TCP byte splice.
            splice_urls = (f"ws://127.0.0.1:{splice_port}/twilio/media/x", urls[1])
            result["reference_tcp_splice"] = {
                shape: await run_shape(splice_urls, splice.pid, streams, secs, every, 0.0)
                for shape, every in SHAPES.items()
            }
            print(f"run {i + 1}: {json.dumps(result)}", flush=True)
            runs.append(result)
        return {"runs": runs}
    finally:
        if orchestrator is not None:
            stop_process(orchestrator)
        for helper in (echo, splice):
            helper.terminate()
            helper.wait(timeout=10)
        redis_process.terminate()
        redis_process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def doc_section(data: dict) -> str:
    """The results table of docs/performance.md's "Media edge relay" section."""
    rows = []
    arms = {"shapes": "edge", "reference_tcp_splice": "bare TCP splice (reference)"}
    for i, run in enumerate(data["runs"], 1):
        for label, (shape, r) in (
            (label, s) for key, label in arms.items() for s in run[key].items()
        ):
            edge, direct = r["rtt_ms"]["edge"], r["rtt_ms"]["direct"]
            rows.append(
                f"| {i} | {label} | {shape.replace('_', ' ')} | {direct['p50']:.2f} / {direct['p95']:.2f} "
                f"| {edge['p50']:.2f} / {edge['p95']:.2f} "
                f"| **{r['added_one_way_ms']['p50']:.2f} / {r['added_one_way_ms']['p95']:.2f}** "
                f"| **{r['edge_cpu_pct_of_a_core_per_stream']:.2f} %** | {r['edge_cpu_us_per_relayed_frame']:.0f} µs |"
            )
    return "\n".join(
        [
            f"{data['runs'][0]['streams']} streams through the relay and {data['runs'][0]['streams']} direct at the same time, "
            f"{data['runs'][0]['secs']:.0f} s per shape after 1 s of warm-up; {data['machine']}.",
            "",
            "| run | relay | traffic | direct RTT p50 / p95 (ms) | relayed RTT p50 / p95 (ms) | added one-way p50 / p95 (ms) | relay CPU per call (% of a core) | relay CPU per relayed frame |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"`{data['command']}`; raw numbers in `benchmarks/results/media_edge.json`.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=10,
        help=f"streams through the edge, as many direct (≤ {MAX_STREAMS})",
    )
    parser.add_argument(
        "--secs", type=float, default=15.0, help="measured seconds per mode (after 1 s warm-up)"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="independent runs (the machine is noisy)"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/performance.md")
    parser.add_argument("--echo-port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--splice-port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--splice-to", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_port is not None:
        uvloop.run(run_echo_worker(args.echo_port))
        return
    if args.splice_port is not None:
        uvloop.run(run_splice(args.splice_port, args.splice_to))
        return
    if not 1 <= args.streams <= MAX_STREAMS or not 1 <= args.secs <= 120:
        parser.error(f"--streams must be 1..{MAX_STREAMS} and --secs 1..120")
    data = uvloop.run(run(args.streams, args.secs, args.repeat))  # as uvicorn runs the edge
    data["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    data["command"] = (
        f"python benchmarks/media_edge.py --streams {args.streams} --secs {args.secs:g} --repeat {args.repeat}"
    )
    path = write_result("media_edge", data)
    print(f"wrote {path.relative_to(RESULTS.parents[1])}")
    if not args.no_doc:
        update_doc_section("media_edge", doc_section(data))


if __name__ == "__main__":
    main()
