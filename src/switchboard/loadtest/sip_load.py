"""Many SIP callers at once, spread over caller processes as the load generator spreads its
Twilio callers: pjsua2's pip build holds four calls per process (``PJSUA_MAX_CALLS``; a fifth
``makeCall`` fails with ``PJ_ETOOMANY`` whatever ``maxCalls`` asks), and PJSIP starts once per
process, so a sweep of 25 calls needs seven processes, each with its own line and phone.

Each process gets every ``n``-th slot (so each shares the ramp), reports ready, waits for the
common start, and emits ``start`` / ``watch`` (a call's RTP port) / ``end`` (the call's timed
turns) / ``done`` events on a queue, as ``loadgen``'s shards do. The wire is read here, by one
RTP tap for every process (a tap reads every packet on loopback: one per caller process cost
20 % of a core each at ten calls), and each call's turns are placed on it as ``sip_caller`` does.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from switchboard.loadtest.known_end import KnownEndClip
from switchboard.loadtest.rtp_tap import RtpTap
from switchboard.loadtest.sip_caller import SipTurn, wire_turn

CALLS_PER_PROCESS = 4  # PJSUA_MAX_CALLS of pjsua2's pip build
_READY_SECS = 60.0  # a caller process imports PJSIP and numpy and opens its tap
_QUIET_SECS = 600.0  # no event from any caller process this long: they are stuck


@dataclass(frozen=True)
class SipSlot:
    """One caller slot: starts ``delay_s`` after the common start and places its calls in turn,
    each saying its clips."""

    delay_s: float
    calls: tuple[tuple[KnownEndClip, ...], ...]


@dataclass
class SipCallSummary:
    """One call as its phone heard it and its RTP port carried it (``sip_caller.SipCallResult``
    without the PJSIP objects, which stay in their process)."""

    slot: int
    answered: bool
    turns: list[SipTurn] = field(default_factory=list)
    wire: list[SipTurn] = field(default_factory=list)
    failure: str | None = None
    call: int = 0  # which of the slot's calls
    rtp_port: int | None = None


class _PortReporter:
    """Stands in for the RTP tap in a caller process: tells the parent which port to read."""

    def __init__(self, events: Any):
        self._events = events

    def watch(self, port: int) -> None:
        self._events.put({"kind": "watch", "port": port})

    def packets(self, port: int) -> list:
        return []  # the parent places the turns on the wire


@dataclass
class SipLoadRun:
    calls: list[SipCallSummary]
    caller_cpu_s: float  # over every caller process
    processes: int


def processes_for(slots: int) -> int:
    return max(1, -(-slots // CALLS_PER_PROCESS))


def run_sip_load(uri: str, caller: str, slots: list[SipSlot], *, tap: bool = True,
                 on_active: Callable[[int], None] | None = None,
                 on_started: Callable[[list[int]], None] | None = None) -> SipLoadRun:
    """Dial ``uri`` as ``caller`` from every slot at once (each after its delay); blocks until
    every call has ended. ``on_active`` is told the number of calls up whenever it changes,
    ``on_started`` the caller processes' pids (for their CPU)."""
    n = processes_for(len(slots))
    ctx = mp.get_context("spawn")  # PJSIP must not be inherited half-started from this process
    events: Any = ctx.Queue()
    go = ctx.Event()
    t0 = ctx.Value("d", 0.0)
    shards = [[(i, slots[i]) for i in range(p, len(slots), n)] for p in range(n)]
    workers = [ctx.Process(target=_shard_main, args=(uri, caller, shard, tap, events, go, t0), daemon=True)
               for shard in shards]  # fmt: skip
    for worker in workers:
        worker.start()
    if on_started is not None:
        on_started([w.pid for w in workers])
    calls: list[SipCallSummary] = []
    cpu_s, active, done = 0.0, 0, 0
    wire = RtpTap() if tap else None
    try:
        if wire is not None:
            wire.__enter__()
        ready = 0
        while ready < n:
            event = _next(events, workers, 0, _READY_SECS, "caller processes ready")
            if event["kind"] == "failed":
                raise RuntimeError(f"a caller process failed to start: {event['error']}")
            ready += event["kind"] == "ready"
        t0.value = time.monotonic() + 0.2
        go.set()
        while done < n:
            event = _next(events, workers, done, _QUIET_SECS, "caller events")
            kind = event["kind"]
            if kind == "watch" and wire is not None:
                wire.watch(event["port"])
            elif kind in ("start", "end"):
                active += 1 if kind == "start" else -1
                if on_active is not None:
                    on_active(active)
                if kind == "end":
                    call: SipCallSummary = event["call"]
                    if wire is not None and call.rtp_port is not None:
                        spoken = slots[call.slot].calls[call.call]
                        packets = wire.packets(call.rtp_port)
                        call.wire = [wire_turn(packets, turn, clip, time.time() - time.monotonic())
                                     for turn, clip in zip(call.turns, spoken, strict=False)]  # fmt: skip
                    calls.append(call)
            elif kind == "done":
                cpu_s += event["cpu_s"]
                done += 1
            elif kind == "failed":
                raise RuntimeError(f"a caller process failed: {event['error']}")
    finally:
        go.set()
        if wire is not None:
            wire.__exit__(None, None, None)
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
    return SipLoadRun(sorted(calls, key=lambda c: c.slot), round(cpu_s, 2), n)


def _next(events: Any, workers: list, finished: int, limit_secs: float, what: str) -> dict:
    """The next event; a process gone before its ``done`` (``finished`` have sent theirs) died."""
    deadline = time.monotonic() + limit_secs
    while time.monotonic() < deadline:
        try:
            return events.get(timeout=1.0)
        except queue.Empty:
            if sum(not w.is_alive() for w in workers) > finished and events.empty():
                raise RuntimeError(f"a caller process exited before {what}") from None
    raise TimeoutError(f"no {what} within {limit_secs:.0f} s")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard_main(uri: str, caller: str, shard: list[tuple[int, SipSlot]], tap: bool,
                events: Any, go: Any, t0: Any) -> None:
    """A caller process: its own PJSIP line and one phone; its slots on threads."""
    from switchboard.loadtest.sip_caller import run_sip_call
    from switchboard.loadtest.sip_phone import SipLine

    cpu0 = time.process_time()
    try:
        line = SipLine(max_calls=CALLS_PER_PROCESS).start()
        phone = line.phone(caller, _free_udp_port())
    except Exception as e:  # handed to the parent, which stops the run
        events.put({"kind": "failed", "error": repr(e)})
        return
    reporter = _PortReporter(events) if tap else None
    try:
        events.put({"kind": "ready"})
        go.wait()

        def run_slot(index: int, slot: SipSlot) -> None:
            time.sleep(max(0.0, t0.value + slot.delay_s - time.monotonic()))
            for k, clips in enumerate(slot.calls):
                events.put({"kind": "start"})
                summary = SipCallSummary(index, answered=False, call=k)
                try:
                    result = run_sip_call(phone, uri, list(clips), reporter)  # type: ignore[arg-type]
                    summary = SipCallSummary(index, result.call.confirmed_at is not None, result.turns,
                                             failure=result.failure, call=k, rtp_port=result.call.rtp_port)  # fmt: skip
                except Exception as e:  # a caller's bug costs its call, not the run
                    summary.failure = f"caller_error: {e!r}"[:200]
                events.put({"kind": "end", "call": summary})

        threads = [threading.Thread(target=run_slot, args=pair, daemon=True) for pair in shard]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        line.stop()
        events.put({"kind": "done", "cpu_s": time.process_time() - cpu0})
