"""Admission by measured headroom, in-process against a real Redis: the Lua rule every placement
applies, the worker's decision from its measurements, and the hold queue's order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from conftest import RedisServer, start_redis
from switchboard.dispatch import keys
from switchboard.dispatch.admission import AdmitMode, ClosedReason, HeadroomBoard, HeadroomReport
from switchboard.dispatch.hold import HoldLine
from switchboard.dispatch.models import WorkerInfo
from switchboard.dispatch.registry import WorkerRegistry
from switchboard.observability import headroom as windows
from switchboard.settings import Settings
from switchboard.worker.headroom import HeadroomLimits, HeadroomMeter, Measurements, assess

LIMITS = HeadroomLimits(
    latency_limit_ms=480, lag_limit_ms=50, cpu_limit=0.85, engine_queue_limit=4, ceiling=32, burst=4
)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("admission-redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(redis_server: RedisServer):
    c = aioredis.from_url(redis_server.url, decode_responses=True)
    await c.flushdb()
    try:
        yield c
    finally:
        await c.aclose()


async def add_worker(client, worker_id: str, capacity: int = 32, report: HeadroomReport | None = None) -> None:
    if report is not None:
        await HeadroomBoard(client, 10).publish(worker_id, report)
    info = WorkerInfo(
        worker_id=worker_id, media_url="http://127.0.0.1:1", capacity=capacity, pid=1,
        started_at=time.time(), heartbeat_at=time.time(),
    )
    await WorkerRegistry(client, 10).register(info)


def report(admit_until: int, *, open_: bool = True, load: int = 0, reason: ClosedReason | None = None) -> HeadroomReport:
    return HeadroomReport(open=open_, admit_until=admit_until, reason=reason, load=load, at=time.time())


async def load_of(client, worker_id: str) -> int:
    return int(await client.get(keys.worker_load(worker_id)) or 0)


# -- The Lua rule ---------------------------------------------------------------------------


async def test_a_burst_of_placements_from_two_orchestrators_never_over_admits(redis_server, client):
    await add_worker(client, "w1", report=report(admit_until=5))
    other = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        registries = [WorkerRegistry(client, 10), WorkerRegistry(other, 10)]
        placed = await asyncio.gather(
            *(registries[i % 2].reserve_any(f"call-{i}", 15) for i in range(60))
        )
    finally:
        await other.aclose()
    assert sum(1 for p in placed if p == "w1") == 5
    assert await load_of(client, "w1") == 5


async def test_calls_admitted_since_the_report_count_against_it(client):
    """The report said 2 fit at load 0; after one placement and one more, the third waits even
    though no new report came."""
    await add_worker(client, "w1", report=report(admit_until=2))
    registry = WorkerRegistry(client, 10)
    assert [await registry.reserve_any(f"c{i}", 15) for i in range(3)] == ["w1", "w1", None]


async def test_a_closed_worker_admits_nothing_and_the_open_one_takes_the_call(client):
    await add_worker(client, "hot", report=report(3, open_=False, load=3, reason=ClosedReason.LATENCY))
    await add_worker(client, "cool", report=report(admit_until=1))
    registry = WorkerRegistry(client, 10)
    assert await registry.reserve_any("c1", 15) == "cool"
    assert await registry.reserve_any("c2", 15) is None


async def test_the_ceiling_holds_whatever_the_report_says(client):
    await add_worker(client, "w1", capacity=2, report=report(admit_until=10))
    registry = WorkerRegistry(client, 10)
    assert [await registry.reserve_any(f"c{i}", 15) for i in range(3)] == ["w1", "w1", None]


async def test_a_resumed_call_is_held_to_the_ceiling_only(client):
    """An admitted call whose worker was lost is not refused for headroom: it was let in."""
    await add_worker(client, "w1", capacity=2, report=report(0, open_=False, reason=ClosedReason.CPU))
    registry = WorkerRegistry(client, 10)
    assert await registry.reserve_any("c1", 15) is None
    assert await registry.reserve_any("c1", 15, mode=AdmitMode.RESUME) == "w1"


async def test_a_worker_without_a_report_admits_by_its_slots(client):
    await add_worker(client, "w1", capacity=1)
    registry = WorkerRegistry(client, 10)
    assert [await registry.reserve_any(f"c{i}", 15) for i in range(2)] == ["w1", None]


# -- The worker's decision --------------------------------------------------------------------


def measured(load: int, *, p95: float | None = None, lag: float = 0.0, cpu: float = 0.0, engine: int = 0) -> Measurements:
    return Measurements(load=load, p95_ms=p95, turns=10, lag_ms=lag, cpu=cpu, engine_queue=engine)


@pytest.mark.parametrize(
    ("m", "reason"),
    [
        (measured(3, p95=500), ClosedReason.LATENCY),
        (measured(3, lag=80), ClosedReason.LAG),
        (measured(3, cpu=0.9), ClosedReason.CPU),
        (measured(3, engine=4), ClosedReason.ENGINE_QUEUE),
        (measured(32), ClosedReason.CEILING),
    ],
)
def test_each_signal_over_its_limit_closes_the_worker_and_names_itself(m: Measurements, reason: ClosedReason):
    decided = assess(m, LIMITS, at=0)
    assert (decided.open, decided.reason, decided.admit_until) == (False, reason, min(m.load, 32))


def test_an_idle_worker_is_open_whatever_it_measures():
    assert assess(measured(0, lag=200, cpu=1.0, engine=9), LIMITS, at=0).admit_until == LIMITS.burst
    # Slow turns still in the window: one call at a time until they leave it.
    assert assess(measured(0, p95=900), LIMITS, at=0).admit_until == 1


def test_cpu_per_call_bounds_how_many_more_are_admitted():
    # 4 calls use 0.6 of the CPU: 0.15 a call, so one more fits under 0.85 (0.75), two do not.
    assert assess(measured(4, cpu=0.6), LIMITS, at=0).admit_until == 5
    assert assess(measured(4, cpu=0.2), LIMITS, at=0).admit_until == 4 + LIMITS.burst


def test_latency_near_the_limit_admits_one_at_a_time():
    assert assess(measured(4, p95=400), LIMITS, at=0).admit_until == 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class IdleCpu:
    def read(self) -> float:
        return 0.1


async def test_high_p95_closes_placements_and_they_reopen_once_turns_are_quick_again(client, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(windows, "TURN_LATENCY_MS", windows.RollingWindow(10, clock))
    monkeypatch.setattr(windows, "LOOP_LAG_MS", windows.RollingWindow(5, clock))
    meter = HeadroomMeter(Settings(headroom_window_secs=10), cpu=IdleCpu(), clock=clock)  # objective 600, margin 0.8
    board, registry = HeadroomBoard(client, 10), WorkerRegistry(client, 10)
    await add_worker(client, "w1", report=meter.assess(0))
    assert await registry.reserve_any("c1", 15) == "w1"
    for _ in range(10):
        windows.TURN_LATENCY_MS.add(700)
    await board.publish("w1", meter.assess(await load_of(client, "w1")))
    assert meter.last is not None and meter.last.reason is ClosedReason.LATENCY
    assert await registry.reserve_any("c2", 15) is None
    stored = (await board.reports(["w1"]))["w1"]
    assert (stored.open, stored.reason, stored.p95_ms) == (False, ClosedReason.LATENCY, 700)

    clock.now += 11  # the slow turns leave the window, and new ones are quick
    for _ in range(5):
        windows.TURN_LATENCY_MS.add(200)
    await board.publish("w1", meter.assess(await load_of(client, "w1")))
    assert await registry.reserve_any("c2", 15) == "w1"


def test_no_more_than_the_burst_is_let_in_before_new_calls_show_in_the_measurements(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(windows, "TURN_LATENCY_MS", windows.RollingWindow(10, clock))
    monkeypatch.setattr(windows, "LOOP_LAG_MS", windows.RollingWindow(5, clock))
    meter = HeadroomMeter(Settings(admission_burst=4, admission_settle_secs=5), cpu=IdleCpu(), clock=clock)
    assert meter.assess(0).admit_until == 4
    clock.now += 0.5
    settling = meter.assess(4)
    assert (settling.open, settling.admit_until) == (True, 4)  # the four just let in have not spoken yet
    clock.now += 5
    assert meter.assess(4).admit_until == 8


def test_a_worker_remembers_the_load_it_broke_its_limit_at_and_relearns_it_slowly(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(windows, "TURN_LATENCY_MS", windows.RollingWindow(10, clock))
    monkeypatch.setattr(windows, "LOOP_LAG_MS", windows.RollingWindow(5, clock))
    meter = HeadroomMeter(Settings(admission_settle_secs=5), cpu=IdleCpu(), clock=clock)
    for _ in range(10):
        windows.TURN_LATENCY_MS.add(700)
    assert meter.assess(8).reason is ClosedReason.LATENCY  # broken at 8: 0.85 x 8 = 6.8 holds
    clock.now += 1
    windows.TURN_LATENCY_MS.add(900)
    meter.assess(7)  # still over, but one cut per settle window: the window still shows load 8
    assert meter.learned.allows() == 6

    clock.now += 11  # the slow turns left the window; calls ended meanwhile
    assert meter.assess(4).admit_until == 6  # not 4 + burst: the load that broke it is known
    at_limit = meter.assess(6)
    assert (at_limit.open, at_limit.reason) == (False, ClosedReason.LEARNED)
    for _ in range(10):
        windows.TURN_LATENCY_MS.add(200)  # comfortable at the limit: one more per settle window
    clock.now += 5
    meter.assess(6)
    assert meter.learned.allows() == 7
    clock.now += 1
    meter.assess(7)
    assert meter.learned.allows() == 7  # not again before the next settle window


def test_an_idle_worker_is_open_whatever_it_learned(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(windows, "TURN_LATENCY_MS", windows.RollingWindow(10, clock))
    monkeypatch.setattr(windows, "LOOP_LAG_MS", windows.RollingWindow(5, clock))
    meter = HeadroomMeter(Settings(), cpu=IdleCpu(), clock=clock)
    for _ in range(10):
        windows.TURN_LATENCY_MS.add(700)
    meter.assess(1)
    assert meter.learned.allows() == 1
    clock.now += 11
    assert meter.assess(0).open


async def test_event_loop_lag_closes_the_worker(client, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(windows, "TURN_LATENCY_MS", windows.RollingWindow(10, clock))
    monkeypatch.setattr(windows, "LOOP_LAG_MS", windows.RollingWindow(5, clock))
    meter = HeadroomMeter(Settings(), cpu=IdleCpu(), clock=clock)
    for _ in range(20):
        windows.LOOP_LAG_MS.add(120)
    assert meter.assess(2).reason is ClosedReason.LAG
    clock.now += 6
    # The lag is gone; the load it broke at is remembered until turns show room again.
    assert meter.assess(2).reason is ClosedReason.LEARNED
    for _ in range(2):
        for _ in range(5):
            windows.TURN_LATENCY_MS.add(200)
        clock.now += 5
        meter.assess(2)
    assert meter.assess(2).open


# -- The hold queue ---------------------------------------------------------------------------


async def test_held_calls_are_placed_in_arrival_order_as_headroom_frees(client):
    line = HoldLine(client, 600)
    await add_worker(client, "w1", report=report(0, open_=False, reason=ClosedReason.CEILING))
    positions = [await line.join(f"call-{i}", 60, {"agent": "a"}, now=100.0 + i) for i in range(3)]
    assert positions == [1, 2, 3]
    assert await line.place_head(15) is None  # closed: everybody keeps waiting

    await HeadroomBoard(client, 10).publish("w1", report(admit_until=2))
    assert await line.place_head(15) == ("call-0", "w1")
    assert await line.place_head(15) == ("call-1", "w1")
    assert await line.place_head(15) is None  # admit_until reached
    assert await line.position("call-2") == 1
    assert (await line.held("call-0"))["worker"] == "w1"


async def test_a_new_call_does_not_jump_the_hold_queue(client):
    line, registry = HoldLine(client, 600), WorkerRegistry(client, 10)
    await add_worker(client, "w1", report=report(admit_until=4))
    await line.join("call-waiting", 60, {})
    assert await registry.reserve_any("call-new", 15) is None
    assert await line.place_head(15) == ("call-waiting", "w1")
    assert await registry.reserve_any("call-new", 15) == "w1"


async def test_a_held_call_past_its_deadline_is_taken_out_once(redis_server, client):
    line = HoldLine(client, 600)
    await line.join("call-late", 5, {}, now=100.0)
    await line.join("call-early", 60, {}, now=101.0)
    other = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        taken = await asyncio.gather(line.expired(now=110.0), HoldLine(other, 600).expired(now=110.0))
    finally:
        await other.aclose()
    assert sorted(taken, key=len) == [[], ["call-late"]]
    assert await line.position("call-early") == 1
    assert await line.length() == 1


# -- Settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("latency_objective_ms", "0"), ("admission_cpu_limit", "1.5"), ("admission_burst", "0"), ("admission", "guess")],
)
def test_a_bad_admission_setting_is_refused_at_start_naming_it(field: str, value: str, monkeypatch, capsys):
    from switchboard.cli import main
    from switchboard.settings import get_settings

    monkeypatch.setenv(f"SWITCHBOARD_{field.upper()}", value)
    get_settings.cache_clear()
    try:
        assert main(["orchestrator", "--port", "1"]) == 2
    finally:
        get_settings.cache_clear()
    assert f"SWITCHBOARD_{field.upper()} ({field})" in capsys.readouterr().err


# -- Campaigns pace to headroom ---------------------------------------------------------------


async def test_a_campaign_waits_for_headroom_and_spends_what_it_reads():
    import httpx

    from switchboard.dialer import HeadroomPacer

    answers = iter([
        {"admits_now": 3, "hold_queue_length": 1},  # callers holding: their turn first
        {"admits_now": 0, "hold_queue_length": 0},
        {"admits_now": 2, "hold_queue_length": 0},
    ])
    reads = []

    def stats(request: httpx.Request) -> httpx.Response:
        reads.append(request.headers["X-API-Key"])
        return httpx.Response(200, json={"admission": next(answers)})

    clock = FakeClock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(stats)) as client:
        pacer = HeadroomPacer(client, "http://orchestrator", "key", poll_secs=0.001, clock=clock)
        await pacer.admit()
        await pacer.admit()  # the budget read last time: no new read
        assert (len(reads), pacer.waits) == (3, 2)


async def test_a_server_without_admission_figures_is_not_paced():
    import httpx

    from switchboard.dialer import HeadroomPacer

    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: httpx.Response(404))) as client:
        await asyncio.wait_for(HeadroomPacer(client, "http://agent", "key").admit(), 1)


# -- Agent overflow config --------------------------------------------------------------------


def agent_yaml(tmp_path, overflow: str):
    path = tmp_path / "agent.yaml"
    path.write_text("name: t\ngreeting: Hi.\nfallback: Sorry?\n" + overflow)
    return path


@pytest.mark.parametrize(
    ("overflow", "field"),
    [
        ("overflow:\n  action: queue\n", "overflow.queue.max_wait_secs: Value error, a hold queue needs a maximum wait"),
        ("overflow:\n  action: queue\n  max_wait_secs: 0\n", "overflow.queue.max_wait_secs"),
        ("overflow:\n  action: transfer\n  to: '555'\n", "overflow.transfer.to"),
        ("overflow:\n  action: queue\n  max_wait_secs: 30\n  then: {action: queue}\n", "overflow.queue.then"),
        ("overflow:\n  action: hold\n", "overflow"),
    ],
)
def test_a_bad_overflow_is_refused_naming_the_field(tmp_path, overflow: str, field: str):
    from switchboard.agent.config import load_agent_config
    from switchboard.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        load_agent_config(agent_yaml(tmp_path, overflow))
    assert field in str(refused.value)


def test_an_agent_without_overflow_answers_busy_with_todays_line(tmp_path):
    from switchboard.agent.config import BUSY_LINE, BusyOverflow, load_agent_config

    agent = load_agent_config(agent_yaml(tmp_path, ""))
    assert agent.overflow == BusyOverflow(action="busy", line=BUSY_LINE)


def test_cpu_is_read_from_the_machine_or_from_the_containers_quota(tmp_path):
    from switchboard.worker.headroom import CpuMeter

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3\n")
    machine = CpuMeter(stat=stat, cgroup=tmp_path / "none")
    stat.write_text("cpu  160 0 140 900 0 0 0 0 0 0\n")  # 100 busy of 200 jiffies
    assert machine.read() == 0.5

    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text("200000 100000\n")  # a limit of 2 cores
    (cgroup / "cpu.stat").write_text("usage_usec 1000000\nuser_usec 1\n")
    clock = FakeClock()
    container = CpuMeter(stat=stat, cgroup=cgroup, clock=clock)
    clock.now += 1.0
    (cgroup / "cpu.stat").write_text("usage_usec 2500000\n")  # 1.5 core-seconds in 1 s of 2 cores
    assert container.read() == 0.75
