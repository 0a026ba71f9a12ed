"""Replay consistency: a build's own recorded calls replayed against the same build, R times each.

For every call, how many of its replays did the same things (the same intents, tool calls,
transfers, digits and ending: any verdict but "different action"), and how far the replies'
latency moved (the median change per replay, in ms). Run it against a stack that has recorded
calls, e.g. after ``switchboard test examples/suites/receptionist.yaml``:

    python benchmarks/replay_consistency.py --url http://127.0.0.1:8080 --calls 20 --rounds 10

or let it record them first: ``--suite examples/suites/receptionist.yaml`` runs the suite (again,
if one run leaves fewer than ``--calls`` calls replay can take) and keeps the first ``--calls``
calls of passing scenarios whose recording replay accepts (a call whose key presses the agent
redacted is refused, with the reason printed). The stack's agent must record its calls
(``recording: enabled: true``) and, for calls with keys, keep them (``redaction.keypad_digits:
false``), as tests/test_agent_suites.py's pool does.

Results go to benchmarks/results/replay_consistency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path

from switchboard.testing.calls_client import CallsClient
from switchboard.testing.replay import (
    Refused,
    ReplayOptions,
    plan_replay,
    recorded_history,
    replay_calls,
)
from switchboard.testing.runner import RunOptions, run_suite
from switchboard.testing.scenario import load_suite

RESULTS = Path(__file__).resolve().parent / "results" / "replay_consistency.json"
_SUITE_RUNS = 3  # at most, to find enough replayable calls


async def _refusal(calls: CallsClient, call_id: str) -> str | None:
    """Why replay would refuse the call (None: it takes it)."""
    record = await calls.record(call_id)
    if record is None or not record.get("recording"):
        return "not recorded"
    audio = await calls.recording(call_id)
    if audio is None:
        return "no recording"
    try:
        plan = await asyncio.to_thread(plan_replay, call_id, record, audio)
    except Refused as e:
        return str(e)
    if plan.clips_dir is not None:
        shutil.rmtree(plan.clips_dir, ignore_errors=True)
    return None


async def record_calls(args: argparse.Namespace, key: str) -> tuple[list[str], dict[str, str]]:
    """Run ``args.suite`` until ``args.calls`` of its passing calls are replayable; those calls,
    and why the others were left out."""
    suite = load_suite(Path(args.suite))
    options = RunOptions(
        url=args.url, api_key=key, auth_token=args.auth_token, parallel=args.parallel, twilio_api=args.twilio_api,
    )  # fmt: skip
    found: list[str] = []
    left_out: dict[str, str] = {}
    calls = CallsClient(args.url, key)
    try:
        for n in range(_SUITE_RUNS):
            run = await run_suite(suite, options)
            print(f"recording run {n + 1}: {len(run.scenarios) - len(run.failed)}/{len(run.scenarios)} passed, {run.wall_s:.0f} s", flush=True)
            for scenario in run.scenarios:
                if scenario.call_id is None:
                    continue
                why = "the scenario failed" if not scenario.passed else await _refusal(calls, scenario.call_id)
                if why is None:
                    found.append(scenario.call_id)
                else:
                    left_out[scenario.call_id] = f"{scenario.name}: {why}"
                    print(f"  left out {scenario.call_id} ({scenario.name}): {why}", flush=True)
            if len(found) >= args.calls:
                break
    finally:
        await calls.close()
    return found[: args.calls], left_out


async def main(args: argparse.Namespace) -> dict:
    key = args.api_key or os.environ.get("SWITCHBOARD_API_KEY", "")
    calls = list(args.call_ids)[: args.calls]
    left_out: dict[str, str] = {}
    if not calls and args.suite:
        calls, left_out = await record_calls(args, key)
    elif not calls:
        history = CallsClient(args.url, key)
        try:
            calls = await recorded_history(history, args.calls)
        finally:
            await history.close()
    options = ReplayOptions(
        url=args.url, against=args.url, api_key=key, auth_token=args.auth_token, parallel=args.parallel,
        twilio_api=args.twilio_api,
    )  # fmt: skip
    same: dict[str, int] = defaultdict(int)
    verdicts: dict[str, int] = defaultdict(int)  # every replay's verdict: not answered is no action
    deltas: dict[str, list[float]] = defaultdict(list)
    notes: dict[str, list[str]] = defaultdict(list)
    started = time.monotonic()
    rounds_done = 0
    for r in range(args.rounds):
        if args.budget_s and time.monotonic() - started > args.budget_s:
            break
        run = await replay_calls(calls, None, options)
        rounds_done += 1
        for c in run.calls:
            verdicts[c.verdict] += 1
            if c.verdict in ("same", "worded differently"):
                same[c.call_id] += 1
            else:
                notes[c.call_id] += [c.error or "; ".join(c.notes)]
            if c.latency_delta_ms is not None:
                deltas[c.call_id].append(c.latency_delta_ms)
        print(f"round {r + 1}: {sum(c.verdict == 'same' for c in run.calls)}/{len(run.calls)} same, {run.wall_s:.0f} s", flush=True)
        for c in run.calls:
            if c.verdict not in ("same", "worded differently"):
                print(f"  {c.call_id}: {c.verdict}: {c.error or '; '.join(c.notes)}", flush=True)
    all_deltas = [d for ds in deltas.values() for d in ds]
    result = {
        "calls": len(calls),
        "rounds": rounds_done,
        "parallel": args.parallel,
        "wall_s": round(time.monotonic() - started, 1),
        "calls_same_every_time": sum(same[c] == rounds_done for c in calls),
        "replays_same": sum(same.values()),
        "replays": rounds_done * len(calls),
        "verdicts": dict(verdicts),
        "latency_delta_ms": {
            "median": round(statistics.median(all_deltas), 1) if all_deltas else None,
            "p05": round(sorted(all_deltas)[int(0.05 * len(all_deltas))], 1) if all_deltas else None,
            "p95": round(sorted(all_deltas)[int(0.95 * len(all_deltas)) - 1], 1) if all_deltas else None,
        },
        "per_call": {c: {"same": same[c], "latency_deltas_ms": deltas[c], "differences": notes[c]} for c in calls},
        "recorded_with": args.suite,
        "left_out": left_out,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("call_ids", nargs="*", help="these calls (default: the newest recorded ones)")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"))
    parser.add_argument("--twilio-api", default=None, help="the Twilio emulator the agent transfers through")
    parser.add_argument("--suite", default=None, help="record the calls first by running this suite")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=None, help="start no round after this long")
    out = asyncio.run(main(parser.parse_args()))
    print(json.dumps({k: v for k, v in out.items() if k != "per_call"}, indent=2))
