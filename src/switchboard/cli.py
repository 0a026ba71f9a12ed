"""The ``switchboard`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from switchboard.errors import ConfigError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from switchboard.agent.config import load_agent_config
    from switchboard.observability.logging import configure_logging
    from switchboard.settings import get_settings
    from switchboard.worker.app import create_app

    settings = get_settings()
    if args.port:
        settings.port = args.port
    if args.agent:
        settings.agent_config = Path(args.agent)
    configure_logging(settings.log_level, settings.log_format, role="agent")
    agent = load_agent_config(settings.agent_config)
    app = create_app(settings, agent)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, ws="websockets-sansio")
    return 0


def _call(args: argparse.Namespace) -> int:
    from switchboard.loadtest.caller import CallScript, CallTurn, run_call
    from switchboard.loadtest.report import format_summary, write_json

    turns = [
        CallTurn(audio=Path(path), barge_in_after_ms=args.barge_in_ms if i in args.barge_in else None)
        for i, path in enumerate(args.audio)
    ]
    script = CallScript(turns=turns)
    result = asyncio.run(
        run_call(
            args.url,
            script,
            auth_token=args.auth_token,
            record_path=Path(args.record) if args.record else None,
            transcribe=not args.no_transcribe,
        )
    )
    print(format_summary(result))
    if args.json:
        write_json(result, Path(args.json))
    return 0 if result.outcome in ("completed", "agent_hung_up") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, help_text in (
        ("serve", "run one agent server (Twilio webhook + media stream) in this process"),
        ("up", "start the local stack, ready to take a call on http://127.0.0.1:8080"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--port", type=int, default=None, help="listen port (default SWITCHBOARD_PORT or 8080)")
        p.add_argument("--agent", default=None, help="agent config YAML (default: the example receptionist)")
        p.set_defaults(func=_serve)

    p = sub.add_parser("call", help="place a simulated Twilio call and report what the agent said")
    p.add_argument("audio", nargs="+", help="WAV files the caller says, one per turn")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="agent or orchestrator base URL")
    p.add_argument("--json", default=None, help="write a JSON report here")
    p.add_argument("--record", default="recordings/call.wav", help="stereo WAV: caller left, agent right")
    p.add_argument("--barge-in", type=int, action="append", default=[], metavar="TURN",
                   help="turn index (0-based) spoken over the agent's previous reply; repeatable")
    p.add_argument("--barge-in-ms", type=int, default=800, help="how long after the agent starts to barge in")
    p.add_argument("--auth-token", default=None, help="sign requests like Twilio (TWILIO_AUTH_TOKEN)")
    p.add_argument("--no-transcribe", action="store_true", help="skip transcribing the agent's audio")
    p.set_defaults(func=_call)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"switchboard: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
