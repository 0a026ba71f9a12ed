"""A real Prometheus scrapes a real stack (Redis, orchestrator, worker) through simulated calls.

What the caller simulator measured, what the agent recorded, and what Prometheus computes from
the scraped metrics must tell the same story: how many calls, how many turns, how slow.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import httpx
import numpy as np
import pytest
import yaml

from conftest import API_KEY, LOG_DIR, REPO, SERVER_ENV, TEST_AGENT, Clip, free_port
from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import CallOutcome, CallResult, format_summary
from switchboard.observability.metrics import _LATENCY_BUCKETS_MS

PROMETHEUS = shutil.which("prometheus")
REDIS = shutil.which("redis-server")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="prometheus not installed: Debian package 'prometheus'"
    ),
    pytest.mark.skipif(
        REDIS is None, reason="redis-server not installed: Debian package 'redis-server'"
    ),
]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "switchboard.json"


@dataclass
class Stack:
    orchestrator_url: str
    worker_url: str
    prometheus_url: str

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5
        )
        body = response.json()
        assert body.get("status") == "success", f"{promql}: {body}"
        return body["data"]["result"]

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None


def wait_for(
    what: str, probe: Callable[[], object], timeout: float, processes: list[subprocess.Popen]
) -> object:
    """Poll ``probe`` until it returns something truthy; fail early if a process died."""
    deadline = time.monotonic() + timeout
    while True:
        for p in processes:
            assert p.poll() is None, (
                f"{p.args[0]} exited with {p.returncode} while waiting for {what}"
            )
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def _start(argv: list[str], log: IO[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def _stop(processes: list[subprocess.Popen]) -> None:
    for p in reversed(processes):
        if p.poll() is None:
            p.terminate()
    for p in reversed(processes):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert PROMETHEUS and REDIS
    tmp = tmp_path_factory.mktemp("prometheus-stack")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    redis_port, orch_port, worker_port, prom_port = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    )
    env = {
        **os.environ,
        **SERVER_ENV,
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SWITCHBOARD_LOG_FORMAT": "json",
        # One worker on a shared 2-core machine: keep inference from oversubscribing.
        "SWITCHBOARD_INFERENCE_THREADS": "1",
    }
    cli = [sys.executable, "-m", "switchboard.cli"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "switchboard-orchestrator",
                "static_configs": [{"targets": [f"127.0.0.1:{orch_port}"]}],
                # /metrics is an operator endpoint: Prometheus sends the key as a bearer token.
                "authorization": {"credentials": API_KEY},
            },
            {
                "job_name": "switchboard-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                "authorization": {"credentials": API_KEY},
            },
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    processes: list[subprocess.Popen] = []
    with open(LOG_DIR / "prometheus-stack.log", "w") as log:
        try:
            processes.append(
                _start(
                    [
                        REDIS,
                        "--port",
                        str(redis_port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    log,
                )
            )
            processes.append(_start([*cli, "orchestrator", "--port", str(orch_port)], log, env))
            processes.append(
                _start(
                    [
                        *cli,
                        "worker",
                        "--port",
                        str(worker_port),
                        "--worker-id",
                        "prom-test-worker",
                        "--agent",
                        str(TEST_AGENT),
                    ],
                    log,
                    env,
                )
            )
            processes.append(
                _start(
                    [
                        PROMETHEUS,
                        f"--config.file={tmp / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    log,
                )
            )
            s = Stack(
                f"http://127.0.0.1:{orch_port}",
                f"http://127.0.0.1:{worker_port}",
                f"http://127.0.0.1:{prom_port}",
            )
            # Ready means Redis answers and the worker registered (after loading its models).
            wait_for(
                "orchestrator ready",
                lambda: httpx.get(f"{s.orchestrator_url}/health", timeout=1).status_code == 200,
                120,
                processes,
            )
            wait_for("both targets up", lambda: s.scalar("sum(up)") == 2, 30, processes)
            yield s
        finally:
            _stop(processes)


@pytest.fixture(scope="module")
def calls(stack: Stack, speech_clips: dict[str, Clip]) -> list[CallResult]:
    """Two overlapping calls: three turns and two turns, each ending with the agent's goodbye."""

    def turns(*names: str) -> list[CallerTurn]:
        *middle, last = names
        return [CallerTurn(audio=speech_clips[n].path) for n in middle] + [
            CallerTurn(audio=speech_clips[last].path, hangup_expected=True)
        ]

    scripts = [
        CallScript(
            turns=turns(
                "osr_us_0010_s01_8k.wav", "osr_us_0010_s05_8k.wav", "fw_stereo_right_16k.wav"
            )
        ),
        CallScript(turns=turns("osr_us_0010_s05_8k.wav", "fw_stereo_right_16k.wav")),
    ]

    async def place() -> list[CallResult]:
        return await asyncio.gather(
            *(run_call(stack.orchestrator_url, s, transcribe=False) for s in scripts)
        )

    results = asyncio.run(place())
    for result in results:
        assert result.outcome == CallOutcome.AGENT_HUNG_UP, format_summary(result)
        assert all(t.voice_to_voice_ms is not None for t in result.turns), format_summary(result)
    return results


def agent_turn_latencies(stack: Stack, results: list[CallResult]) -> list[float]:
    """turn_rtt_ms as the agent recorded each turn (the worker's /calls records)."""
    values = []
    for result in results:
        record = httpx.get(
            f"{stack.worker_url}/calls/{result.call_sid}", headers={"X-API-Key": API_KEY}, timeout=5
        ).json()
        values += [t["bot_started_ms"] for t in record["turns"] if t["bot_started_ms"] is not None]
    return values


def settled(stack: Stack, turns: int) -> bool:
    """Prometheus has scraped the state after the last call ended."""
    return (
        stack.scalar("sum(turn_rtt_ms_count)") == turns
        and stack.scalar("sum(calls_total)") == 2
        and stack.scalar("sum(active_calls)") == 0
    )


def bucket_around(value: float) -> tuple[float, float]:
    """The turn_rtt_ms bucket (lower, upper] holding ``value``."""
    bounds = (0.0, *map(float, _LATENCY_BUCKETS_MS), float("inf"))
    return next((lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if lo < value <= hi)


def test_prometheus_counts_every_call_and_turn_the_simulator_made(
    stack: Stack, calls: list[CallResult]
) -> None:
    turns = sum(len(r.turns) for r in calls)
    wait_for("final scrape", lambda: settled(stack, turns), 20, [])

    assert stack.scalar('sum(calls_total{outcome="completed"})') == len(calls)
    assert stack.scalar("sum(calls_rejected_total)") in (None, 0.0)
    # Both calls were live at once, and Prometheus saw it (1 s scrapes, calls last > 10 s).
    assert stack.scalar("max_over_time(sum(active_calls)[5m:1s])") == len(calls)
    assert stack.scalar("sum(active_calls)") == 0
    assert stack.scalar("max(worker_capacity)") >= len(calls)


def test_prometheus_turn_latency_matches_the_agents_records_exactly(
    stack: Stack, calls: list[CallResult]
) -> None:
    turns = sum(len(r.turns) for r in calls)
    wait_for("final scrape", lambda: settled(stack, turns), 20, [])
    recorded = agent_turn_latencies(stack, calls)

    assert len(recorded) == turns
    # Same observations, scraped: the sum agrees to the agent's 0.1 ms rounding.
    assert stack.scalar("sum(turn_rtt_ms_sum)") == pytest.approx(sum(recorded), abs=0.1 * turns)
    for le in (300.0, 600.0, 1000.0):  # prometheus_client writes bounds as floats: le="300.0"
        assert stack.scalar(f'sum(turn_rtt_ms_bucket{{le="{le}"}})') == sum(
            v <= le for v in recorded
        )


def nearest_rank(values: list[float], q: float) -> float:
    """The quantile as histogram_quantile ranks it: the ceil(q*n)-th smallest value."""
    return sorted(values)[max(0, int(np.ceil(q * len(values))) - 1)]


def test_prometheus_p95_agrees_with_the_simulator_within_the_justified_tolerance(
    stack: Stack, calls: list[CallResult]
) -> None:
    """p95 from histogram_quantile against the agent's own values and the caller's measurement.

    Tolerances, and why:
    - Prometheus vs the agent's values: histogram_quantile only knows bucket counts and
      interpolates linearly inside the bucket holding the rank, so its estimate lies in the
      bucket of the agent's nearest-rank p95: off by at most that bucket's width (50 ms
      between 250 and 800 ms). With 5 turns the rank is the slowest turn.
    - caller vs agent, per turn: the simulator hears the first *played* agent frame, the agent
      stamps BotStartedSpeaking as it sends it: the output edge (20 ms frame pacing, the
      WebSocket, the simulator's playback buffer, its 10 ms speech detection) adds 0-100 ms
      (here +10..+105 ms, typically +30..+60). Both place the caller's speech end with Silero
      VAD (the agent live, minus its stop delay; the simulator on the whole clip), which
      differs by tens of ms either way, and on this shared 2-core machine event-loop lag
      moves either stamp by up to ~100 ms (CI read -154 once). So caller - agent lies in [-200, +200] ms.
    - caller vs Prometheus: a per-turn shift bounded by [-200, +200] moves every order
      statistic by no more, so the caller's nearest-rank p95 is within [-200, +200] of the
      agent's, and Prometheus within one bucket width of that.
    """
    turns = sum(len(r.turns) for r in calls)
    wait_for("final scrape", lambda: settled(stack, turns), 20, [])
    recorded = agent_turn_latencies(stack, calls)
    caller = [t.voice_to_voice_ms for r in calls for t in r.turns]
    assert len(caller) == len(recorded)

    prom_p95 = stack.scalar("histogram_quantile(0.95, sum by (le) (turn_rtt_ms_bucket))")
    assert prom_p95 is not None
    lo, hi = bucket_around(nearest_rank(recorded, 0.95))
    assert lo <= prom_p95 <= hi, (prom_p95, sorted(recorded))

    deltas = [c - a for c, a in zip(caller, recorded, strict=True)]
    print(
        f"p95 ms: prometheus {prom_p95:.0f}, agent {nearest_rank(recorded, 0.95):.0f}, "
        f"caller {nearest_rank(caller, 0.95):.0f}; caller - agent per turn {[round(d) for d in deltas]}"
    )
    assert all(-200 <= d <= 200 for d in deltas), deltas
    caller_p95 = nearest_rank(caller, 0.95)
    assert caller_p95 - 200 - (hi - lo) <= prom_p95 <= caller_p95 + 200 + (hi - lo), (
        prom_p95,
        caller_p95,
    )


def test_every_dashboard_query_is_valid_promql_on_a_real_prometheus(stack: Stack) -> None:
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            stack.query(target["expr"].replace("$__rate_interval", "1m"))


def test_the_alert_expressions_evaluate_on_the_live_stack_without_firing(
    stack: Stack, calls: list[CallResult]
) -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"][
        0
    ]["rules"]
    for rule in rules:
        if rule["alert"] == "SwitchboardTurnLatencyHigh":
            continue  # a real verdict on 5 turns on a shared 2-core machine; unit-tested instead
        assert stack.query(rule["expr"]) == [], rule["alert"]
