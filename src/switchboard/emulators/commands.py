"""The ``switchboard emulate`` subcommand: run one provider emulator on a port."""

from __future__ import annotations

import argparse
from pathlib import Path

from switchboard.emulators.profiles import PROFILE_NAMES


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``emulate`` on the main CLI's subparsers."""
    p = subparsers.add_parser(
        "emulate", help="run a local Deepgram, ElevenLabs or LLM (OpenAI/Anthropic) emulator"
    )
    p.add_argument("provider", choices=["deepgram", "elevenlabs", "llm"])
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
    p.set_defaults(func=_emulate)


def build_app(args: argparse.Namespace):
    """The ASGI app for ``args.provider``, configured from the command line."""
    from switchboard.emulators.profiles import load_profile

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
    print(
        f"{args.provider} emulator on http://{args.host}:{args.port} (profile {args.profile})",
        flush=True,
    )
    # Audio does not compress: no permessage-deflate on the emulated providers either.
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", ws_ping_interval=None,
        ws_per_message_deflate=False,
    )
    return 0
