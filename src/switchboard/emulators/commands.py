"""The ``switchboard emulate`` subcommand: run one provider emulator on a port."""

from __future__ import annotations

import argparse
from pathlib import Path

from switchboard.emulators.profiles import PROFILE_NAMES


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emulate`` on the main CLI's subparsers."""
    p = subparsers.add_parser(
        "emulate",
        help="run a local Deepgram, ElevenLabs, LLM (OpenAI/Anthropic) or Twilio REST emulator",
    )
    p.add_argument("provider", choices=["deepgram", "elevenlabs", "llm", "twilio"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--profile",
        default="published",
        choices=PROFILE_NAMES,
        help="latency profile (default: published figures; see docs/emulators.md)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one profile field, e.g. ttft_ms=300; repeatable",
    )
    p.add_argument(
        "--transcripts",
        default=None,
        metavar="FILE",
        help="deepgram: what the caller says, one utterance per line, in order",
    )
    p.add_argument(
        "--rules",
        default=None,
        metavar="FILE.yaml",
        help="llm: a list of {match: regex, reply: text}; default: echo the caller",
    )
    p.add_argument("--account-sid", default="AC" + "0" * 32, help="twilio: the account it accepts")
    p.add_argument(
        "--auth-token", default="emulator-token", help="twilio: Basic-auth password and signing key"
    )
    p.add_argument(
        "--dial-outcome",
        action="append",
        default=[],
        metavar="TARGET=STATUS",
        help="twilio: what dialing TARGET gives (completed, busy, no-answer, failed); "
        "default completed; repeatable",
    )
    p.set_defaults(func=_emulate)


def build_app(args: argparse.Namespace):
    """The ASGI app for ``args.provider``, configured from the command line."""
    from switchboard.emulators.profiles import load_profile

    if args.provider == "twilio":
        from switchboard.emulators.twilio import create_app as create_twilio

        outcomes = dict(item.split("=", 1) for item in args.dial_outcome if "=" in item)
        return create_twilio(args.account_sid, args.auth_token, outcomes)

    profile = load_profile(args.provider, args.profile, args.set)
    if args.provider == "deepgram":
        from switchboard.emulators.deepgram import create_app

        scenario = None
        if args.transcripts:
            lines = Path(args.transcripts).read_text().splitlines()
            scenario = [line.strip() for line in lines if line.strip()]
        return create_app(profile, scenario)  # type: ignore[arg-type]
    if args.provider == "elevenlabs":
        from switchboard.emulators.elevenlabs import create_app

        return create_app(profile)  # type: ignore[arg-type]
    from switchboard.emulators.llm import ReplyRules, create_app

    return create_app(profile, ReplyRules.load(args.rules) if args.rules else None)  # type: ignore[arg-type]


def _emulate(args: argparse.Namespace) -> int:
    import uvicorn

    app = build_app(args)
    profile = "" if args.provider == "twilio" else f" (profile {args.profile})"
    print(f"{args.provider} emulator on http://{args.host}:{args.port}{profile}", flush=True)
    # Audio does not compress: no permessage-deflate on the emulated providers either.
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", ws_ping_interval=None,
        ws_per_message_deflate=False,
    )
    return 0
