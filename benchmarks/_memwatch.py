"""Run a Switchboard command with a thread that logs what its heap holds, for finding leaks.

    python benchmarks/_memwatch.py --every 120 --out worker0.jsonl [--tracemalloc] -- worker --port ...

Every ``--every`` seconds it appends one JSON line: live objects by type (after a collection),
unfinished asyncio tasks by coroutine, the threads by name, and with ``--tracemalloc`` the source lines whose
allocations grew most since the first snapshot. Each snapshot stops the process for a moment
(it walks the whole heap), so a soak run with it measures leaks, not latency.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import runpy
import sys
import threading
import time
import tracemalloc
from collections import Counter

_TOP = 40


def _tasks_by_coroutine(objects: list) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for o in objects:
        if isinstance(o, asyncio.Task) and not o.done():
            coro = o.get_coro()
            counts[getattr(coro, "__qualname__", type(coro).__name__)] += 1
    return dict(counts.most_common(_TOP))


def _snapshot(first: tracemalloc.Snapshot | None) -> tuple[dict, tracemalloc.Snapshot | None]:
    gc.collect()
    objects = gc.get_objects()
    by_type = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
    line: dict = {"t": round(time.time(), 1), "objects": len(objects), "by_type": dict(by_type.most_common(_TOP)),
                  "tasks": _tasks_by_coroutine(objects), "threads": sorted(t.name for t in threading.enumerate())}
    del objects
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        if first is None:
            first = snap
        line["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 1e6, 2)
        line["grown_since_first"] = [
            {"where": str(s.traceback[0]), "kb": round(s.size_diff / 1e3, 1), "count": s.count_diff}
            for s in snap.compare_to(first, "lineno")[:_TOP]
        ]
    return line, first


def _watch(every: float, out: str) -> None:
    first = None
    while True:
        time.sleep(every)
        line, first = _snapshot(first)
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=120.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the switchboard.cli arguments")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.tracemalloc:
        tracemalloc.start(1)
    threading.Thread(target=_watch, args=(args.every, args.out), daemon=True, name="memwatch").start()
    sys.argv = ["switchboard", *command]
    runpy.run_module("switchboard.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
