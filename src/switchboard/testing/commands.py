"""The ``switchboard test`` and ``switchboard replay`` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from switchboard.errors import ConfigError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8080", help="orchestrator URL (default: the local stack)")
    p.add_argument("--api-key", default=None, help="operator key for /calls (default SWITCHBOARD_API_KEY)")
    p.add_argument("--auth-token", default=None, help="sign requests like Twilio (default TWILIO_AUTH_TOKEN)")
    p.add_argument("-j", "--parallel", type=int, default=4, help="calls at once")
    p.add_argument("--junit", default=None, metavar="FILE", help="JUnit XML (default OUT/junit.xml)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``test`` and ``replay`` on the main CLI's subparsers."""
    p = subparsers.add_parser("test", help="run a scenario suite with simulated callers; HTML, JUnit, exit status")
    p.add_argument("suite", help="a suite YAML file, or a folder of them")
    _common(p)
    p.add_argument("-k", "--select", default=None, help="only scenarios whose name or tag contains this")
    p.add_argument("--to", default=None, help="dial this number in every scenario (another agent's)")
    p.add_argument("--out", default="test-report", help="folder for report.html, results.json, junit.xml, calls/")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible API root (…/v1) for `judged:` criteria")
    p.add_argument("--judge-model", default="gpt-4o-mini")
    p.add_argument(
        "--caller-llm-url", default=None,
        help="the LLM that plays simulated callers (`caller:` scenarios): OpenAI-compatible API root (…/v1) or Anthropic's",
    )  # fmt: skip
    p.add_argument("--caller-llm-model", default="gpt-4o-mini")
    p.add_argument("--caller-llm-api", choices=["openai", "anthropic"], default="openai")
    p.add_argument("--twilio-api", default=None, help="the Twilio emulator the agent transfers through (to follow transfers)")
    p.set_defaults(func=_test)

    p = subparsers.add_parser("replay", help="replay recorded calls' callers against a build and diff what it does")
    p.add_argument("calls", nargs="*", help="call ids of the history (with their recordings)")
    _common(p)
    p.add_argument("--from-history", type=int, default=None, metavar="N", help="replay the newest N recorded calls")
    p.add_argument("--against", default=None, metavar="URL", help="the build to replay against (default --url)")
    p.add_argument("--to", default=None, help="dial this number instead of the original's (another agent)")
    p.add_argument("--twilio-api", default=None, help="the Twilio emulator the agent transfers through (to follow transfers)")
    p.add_argument("--latency-margin-ms", type=float, default=250.0, help="a slower median reply than this fails")
    p.add_argument("--out", default="replay-report", help="folder for report.html, results.json, junit.xml")
    p.set_defaults(func=_replay)


def _key(args: argparse.Namespace) -> str:
    return args.api_key or os.environ.get("SWITCHBOARD_API_KEY") or ""


def caller_llm_key(api: str) -> str:
    """The simulated caller's LLM key, from the environment only (never a flag: flags are in ps
    and shell histories): SWITCHBOARD_CALLER_LLM_KEY, else the API's usual variable."""
    usual = "OPENAI_API_KEY" if api == "openai" else "ANTHROPIC_API_KEY"
    return os.environ.get("SWITCHBOARD_CALLER_LLM_KEY") or os.environ.get(usual, "")


def _test(args: argparse.Namespace) -> int:
    from switchboard.testing.chat import ChatLLM
    from switchboard.testing.judge import LLMJudge
    from switchboard.testing.report import format_summary, progress_line, write_outputs
    from switchboard.testing.runner import RunOptions, run_suite
    from switchboard.testing.scenario import load_suite

    suite = load_suite(Path(args.suite)).select(args.select).dialing(args.to)
    out = Path(args.out)
    judge = LLMJudge(args.judge_url, args.judge_model, os.environ.get("OPENAI_API_KEY", "")) if args.judge_url else None
    caller_llm = None
    if args.caller_llm_url:
        api = args.caller_llm_api
        caller_llm = ChatLLM(args.caller_llm_url, args.caller_llm_model, api, caller_llm_key(api))
    options = RunOptions(
        url=args.url, api_key=_key(args), auth_token=args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN"),
        parallel=args.parallel, out_dir=out, judge=judge, twilio_api=args.twilio_api, caller_llm=caller_llm,
        turn_progress=lambda line: print(f"        {line}", file=sys.stderr, flush=True),
    )  # fmt: skip
    print(f"{suite.name}: {len(suite.scenarios)} scenarios, {args.parallel} at a time, against {args.url}", file=sys.stderr)
    run = asyncio.run(run_suite(suite, options, lambda r, d, t: print(progress_line(r, d, t), file=sys.stderr, flush=True)))
    paths = write_outputs(run, out, Path(args.junit) if args.junit else None)
    print(format_summary(run))
    print(f"report: {paths['html']}  junit: {paths['junit']}")
    return 0 if run.passed else 1


def _replay(args: argparse.Namespace) -> int:
    from switchboard.testing.replay import ReplayOptions, replay_calls
    from switchboard.testing.replay_report import format_replay, write_replay_outputs

    if not args.calls and not args.from_history:
        raise ConfigError("replay: give call ids, or --from-history N")
    options = ReplayOptions(
        url=args.url, against=args.against or args.url, api_key=_key(args),
        auth_token=args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN"), parallel=args.parallel,
        latency_margin_ms=args.latency_margin_ms, out_dir=Path(args.out), to_number=args.to, twilio_api=args.twilio_api,
    )  # fmt: skip
    run = asyncio.run(replay_calls(args.calls, args.from_history, options, progress=lambda line: print(line, file=sys.stderr, flush=True)))
    paths = write_replay_outputs(run, Path(args.out), Path(args.junit) if args.junit else None)
    print(format_replay(run))
    print(f"report: {paths['html']}  junit: {paths['junit']}")
    return 0 if run.passed else 1
