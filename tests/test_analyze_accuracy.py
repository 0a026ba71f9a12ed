"""The recording analyzer against known truths: a fake agent whose delay is known, and noisy
8 kHz recordings built from real speech with known gaps."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from switchboard.loadtest.analyze import analyze_recording
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.fake_agent import fake_agent_app
from switchboard.loadtest.known_end import load_manifest
from switchboard.loadtest.report import CallOutcome

REPO = Path(__file__).resolve().parents[1]
# Known-end clips whose energy end, measured on the clip itself, is where the clip's signal
# stops (a few derived clips lose background in the cut and end earlier by energy: see the
# report for issue 10).
FAKE_AGENT_CLIPS = [
    "pocketsphinx_cards_001_16k_known_end.wav",
    "osr_us_0010_s02_8k_known_end.wav",
    "osr_us_0010_s03_8k_known_end.wav",
    "osr_us_0010_s04_8k_known_end.wav",
    "pocketsphinx_goforward_16k_known_end.wav",
    "timit_ldc93s1_8k_known_end.wav",
]
DELAYS = [(300, 0), (500, 0), (800, 0), (300, 20), (500, 20), (800, 20)]
FAKE_AGENT_TOLERANCE_MS = 15


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on an ephemeral loopback port in its own thread and event loop."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "fake agent did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_gaps_in_the_recording_are_the_fake_agents_known_delays(tmp_path: Path) -> None:
    """Six calls at once, one per delay: each recording's gaps are the delays the agent used."""
    clips = {c.path.name: c for c in load_manifest(REPO / "benchmarks" / "clips")}
    with ExitStack() as stack:
        urls = [
            stack.enter_context(serve(fake_agent_app(d, j, seed=i)))
            for i, (d, j) in enumerate(DELAYS)
        ]
        scripts = [
            CallScript(
                turns=[
                    CallerTurn(
                        audio=clips[FAKE_AGENT_CLIPS[(i + k) % len(FAKE_AGENT_CLIPS)]].path,
                        pause_before_ms=300,
                    )
                    for k in range(3)
                ]
            )
            for i in range(len(DELAYS))
        ]
        paths = [tmp_path / f"call_{d}_{j}.wav" for d, j in DELAYS]
        results = await asyncio.gather(
            *(
                run_call(u, s, transcribe=False, record_path=p)
                for u, s, p in zip(urls, scripts, paths, strict=True)
            )
        )
        async with httpx.AsyncClient() as client:
            truths = [(await client.get(u + "/turns")).json() for u in urls]
    errors = {}
    for (delay, jitter), result, truth, path in zip(DELAYS, results, truths, paths, strict=True):
        assert result.outcome == CallOutcome.COMPLETED, result.reason
        used = truth[result.call_sid]
        analysis = analyze_recording(path)
        got = analysis.latencies_ms()
        assert len(got) == len(used) == 3, (got, used)
        errors[(delay, jitter)] = [round(g - u, 1) for g, u in zip(got, used, strict=True)]
        assert analysis.caller.confidence == analysis.agent.confidence == "high"
    print("analyzer - fake agent delay, ms:", errors)
    for case, err in errors.items():
        assert max(map(abs, err)) <= FAKE_AGENT_TOLERANCE_MS, (case, err)
