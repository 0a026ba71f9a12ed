"""Each instrument checked against the fake agent's known delay, before its numbers are believed.

``switchboard call`` (the caller simulator), ``switchboard loadtest`` (the load generator) and
``switchboard analyze`` (on the caller's recording) each measure the same calls against a
fake agent that answers exactly N ms (± jitter) after the caller's speech ends (the SIP phone
of the LiveKit benchmarks against a fake SIP agent that does the same over SIP and RTP); every
turn's reading is compared with the delay the agent actually used.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import uvicorn
from fastapi import FastAPI

from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.fake_agent import serve_fake_agents
from switchboard.loadtest.known_end import KnownEndClip

if TYPE_CHECKING:
    from switchboard.loadtest.rtp_tap import RtpTap
    from switchboard.loadtest.sip_phone import SipPhone


@dataclass(frozen=True)
class Reading:
    """One turn as an instrument read it, beside the truth."""

    instrument: str
    delay_ms: float
    jitter_ms: float
    truth_ms: float
    read_ms: float | None

    @property
    def error_ms(self) -> float | None:
        return None if self.read_ms is None else round(self.read_ms - self.truth_ms, 1)


@contextmanager
def serve_app(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on an ephemeral loopback port in its own thread and event loop."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def _one_call(
    url: str, delay_ms: float, jitter_ms: float, clips: list[KnownEndClip], record: Path
) -> tuple[list[float], list[Reading]]:
    script = CallScript(turns=[CallerTurn(audio=c.path) for c in clips])
    result = await run_call(url, script, transcribe=False, record_path=record)
    async with httpx.AsyncClient() as client:
        truth = (await client.get(f"{url}/turns")).json().get(result.call_sid, [])
    readings = [
        Reading("switchboard call", delay_ms, jitter_ms, t, turn.voice_to_voice_ms)
        for t, turn in zip(truth, result.turns, strict=False)
    ]
    return truth, readings


async def validate_calls(
    configs: list[tuple[float, float]], clips: list[KnownEndClip], out_dir: Path | None = None
) -> list[Reading]:
    """One call per ``(delay_ms, jitter_ms)``, all at once, read by the simulator; then each
    recording read by the analyzer (after the calls: analysis must not steal their clock)."""
    from switchboard.analysis.recording import analyze_recording

    agents = [(d, j, int(d + j)) for d, j in configs]
    with tempfile.TemporaryDirectory() as tmp, serve_fake_agents(agents) as urls:
        folder = out_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        records = [folder / f"fake_agent_{int(d)}ms_{int(j)}jitter.wav" for d, j in configs]
        # Agents start before and stop after every call: stopping one mid-run would steal the
        # clock of the calls still measuring.
        calls = await asyncio.gather(
            *(_one_call(u, d, j, clips, r) for u, (d, j), r in zip(urls, configs, records, strict=True))
        )
        readings = [r for _, call_readings in calls for r in call_readings]
        for (delay, jitter), (truth, _), record in zip(configs, calls, records, strict=True):
            gaps = [g.gap_ms for g in analyze_recording(record).gaps]
            readings += [
                Reading("switchboard analyze", delay, jitter, t, g)
                for t, g in zip(truth, gaps, strict=False)
            ]
        return readings


def validate_loadtest(
    delay_ms: float, jitter_ms: float, clips_dir: Path, *, calls: int = 3, out_dir: Path
) -> list[Reading]:
    """A small load test (``calls`` callers at once) against the fake agent."""
    from switchboard.loadtest.loadgen import LoadTestConfig, run_load_test
    from switchboard.loadtest.scenario import ScenarioOptions

    with serve_fake_agents([(delay_ms, jitter_ms, 1)]) as (url,):
        config = LoadTestConfig(
            url=url,
            concurrency=calls,
            calls=calls,
            ramp_up_s=1.0,
            record_fraction=0.0,
            out_dir=out_dir,
            scenario=ScenarioOptions(
                speech_dir=clips_dir, min_turns=2, max_turns=2, barge_in_probability=0.0, goodbye=False
            ),
        )
        run = run_load_test(config)
        truth = httpx.get(f"{url}/turns").json()
    return [
        Reading("switchboard loadtest", delay_ms, jitter_ms, t, turn.voice_to_voice_ms)
        for record in run.calls
        for t, turn in zip(truth.get(record.result.call_sid, []), record.result.turns, strict=False)
    ]


def validate_sip_calls(
    phone: SipPhone, configs: list[tuple[float, float]], clips: list[KnownEndClip], tap: RtpTap | None
) -> list[Reading]:
    """One SIP call per ``(delay_ms, jitter_ms)`` from ``phone`` to a fake SIP agent, all at
    once, read at the phone's ear (after its jitter buffer and media clock) and, with ``tap``,
    on the wire at its RTP port."""
    from concurrent.futures import ThreadPoolExecutor

    from switchboard.loadtest.fake_sip_agent import FakeSipAgent
    from switchboard.loadtest.sip_caller import run_sip_call

    with ExitStack() as agents, ThreadPoolExecutor(len(configs)) as pool:
        fakes = [agents.enter_context(FakeSipAgent(d, j, seed=int(d + j))) for d, j in configs]
        calls = list(pool.map(lambda agent: run_sip_call(phone, agent.uri, clips, tap), fakes))
        readings = []
        for (delay, jitter), agent, call in zip(configs, fakes, calls, strict=True):
            truth = next(iter(agent.turns().values()), [])
            readings += [Reading("sip phone, at its ear", delay, jitter, t, turn.voice_to_voice_ms)
                         for t, turn in zip(truth, call.turns, strict=False)]  # fmt: skip
            readings += [Reading("sip phone, on the wire", delay, jitter, t, turn.voice_to_voice_ms)
                         for t, turn in zip(truth, call.wire, strict=False)]  # fmt: skip
    return readings
