"""The ``switchboard`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from switchboard.errors import ConfigError

if TYPE_CHECKING:
    from switchboard.settings import Settings


def _settings(args: argparse.Namespace, role: str):
    from pydantic import ValidationError

    from switchboard.observability.logging import configure_logging
    from switchboard.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as e:
        raise ConfigError(f"settings: {_settings_problems(e)}") from None
    if getattr(args, "port", None):
        settings.port = args.port
    if getattr(args, "agent", None):
        settings.agent_config = Path(args.agent)
    if getattr(args, "max_calls", None):
        settings.max_calls = args.max_calls
    configure_logging(settings.log_level, settings.log_format, role=role)
    return settings


def _settings_problems(error) -> str:
    """Each refused setting as its environment variable and the reason."""
    return "; ".join(
        f"SWITCHBOARD_{'.'.join(str(p) for p in err['loc']).upper()} ({'.'.join(str(p) for p in err['loc'])}): "
        f"{err['msg']}"
        for err in error.errors(include_input=False, include_url=False)
    )


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args, "agent")
    from switchboard.agent.config import load_agent_config

    agent = load_agent_config(settings.agent_config)  # before the heavy imports: fail at once
    from switchboard.http.serving import serve
    from switchboard.worker.app import create_worker_app

    app = create_worker_app(settings, agent)
    serve(app, settings, before_exit=app.state.drain)
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = _settings(args, f"worker:{args.port}")
    from switchboard.agent.config import load_agent_config

    agent = load_agent_config(settings.agent_config)  # before the heavy imports: fail at once
    from switchboard.dispatch.stream_tokens import check_secret
    from switchboard.http.serving import serve
    from switchboard.worker.app import create_worker_app
    from switchboard.worker.service import WorkerService

    check_secret(settings.stream_secret.get_secret_value(), settings.host)
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    service = WorkerService(settings, agent, worker_id=worker_id, media_url=_internal_url(settings))
    app = create_worker_app(settings, agent, service)
    serve(app, settings, before_exit=app.state.drain)
    return 0


def _internal_url(settings: Settings) -> str:
    """Where the media edge reaches this worker: the configured URL, else host:port (a wildcard
    bind registers this machine's own address, which is what its peers can dial)."""
    if settings.worker_internal_url:
        return settings.worker_internal_url.rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostbyname(socket.gethostname())
    return f"http://{host}:{settings.port}"


def _orchestrator(args: argparse.Namespace) -> int:
    settings = _settings(args, "orchestrator")
    from switchboard.dispatch.stream_tokens import check_secret
    from switchboard.http.serving import serve
    from switchboard.orchestrator.app import create_orchestrator_app

    check_secret(settings.stream_secret.get_secret_value(), settings.host)
    app = create_orchestrator_app(settings)
    serve(app, settings, before_exit=app.state.drain)  # lets relayed streams end
    return 0


STREAM_SECRET_FILE = "stream-secret"  # in --data-dir, beside operator-key


def _up(args: argparse.Namespace) -> int:
    settings = _settings(args, "up")
    from pydantic import SecretStr

    from switchboard.agent.config import load_agent_config
    from switchboard.dispatch.stream_tokens import check_secret
    from switchboard.private_files import OWNER_ONLY_UMASK, local_secret, tighten_dir
    from switchboard.settings import DEV_STREAM_SECRET

    load_agent_config(settings.agent_config)  # fail here, not in every worker
    from switchboard.supervisor import Supervisor

    workers = args.workers or os.cpu_count() or 1
    # Callers' data and secrets land under the data dir (and wherever the records settings
    # point): nothing the stack writes is readable by another local user.
    os.umask(OWNER_ONLY_UMASK)
    data_dir = tighten_dir(Path(args.data_dir))
    if not (settings.api_key_list() or settings.api_key_hash_list()):
        # Call records are never served without a key: give the local stack one of its own,
        # made once and then kept so the browser's copy holds.
        key_file = data_dir / "operator-key"
        os.environ["SWITCHBOARD_API_KEY"] = local_secret(key_file)
        print(f"operator key for the Calls page and /calls: `cat {key_file}`", flush=True)
    if settings.stream_secret.get_secret_value() == DEV_STREAM_SECRET and "SWITCHBOARD_STREAM_SECRET" not in os.environ:
        # Every child inherits it: the orchestrator signs stream tokens the workers accept.
        secret = local_secret(data_dir / STREAM_SECRET_FILE, nbytes=32)  # an HMAC key: 256 bits
        os.environ["SWITCHBOARD_STREAM_SECRET"] = secret
        settings.stream_secret = SecretStr(secret)
    check_secret(settings.stream_secret.get_secret_value(), settings.host)
    livekit = setup = None
    if args.livekit or settings.livekit:
        livekit, setup = _local_livekit(settings, data_dir)
    return Supervisor(settings, workers, args.agent, data_dir, livekit, setup).run()


def _local_livekit(settings: Settings, data_dir: Path):
    """The local LiveKit server and SIP of ``up --livekit`` (keys of this deployment's own unless
    set): what writes their config for the stack's Redis, and the step that creates the trunk
    and dispatch rule once both answer."""
    from pydantic import SecretStr

    from switchboard.telephony import livekit_local as local

    if settings.livekit_api_key and settings.livekit_api_secret:
        keys = local.LiveKitKeys(settings.livekit_api_key, settings.livekit_api_secret.get_secret_value())
    else:
        keys = local.deployment_keys(data_dir / "livekit" / "keys")
    ports = local.LiveKitPorts(http=settings.livekit_port, sip=settings.livekit_sip_port)
    webhook = f"http://127.0.0.1:{settings.port}/webhooks/livekit"
    numbers = _inbound_numbers(settings) or [LOCAL_NUMBER]

    def prepare(redis_url: str) -> local.LocalLiveKit:
        livekit = local.prepare(data_dir / "livekit", ports, keys, redis_url, webhook)
        os.environ.update(livekit.env())  # the orchestrator and the workers reach it with these
        settings.livekit_url = ports.url
        settings.livekit_api_key = keys.api_key
        settings.livekit_api_secret = SecretStr(keys.api_secret)
        return livekit

    def setup() -> None:
        from switchboard.telephony.livekit_setup import ensure_sip_setup

        # Only this machine reaches a loopback LiveKit SIP: it is the carrier of the catch-all.
        done = asyncio.run(ensure_sip_setup(settings, numbers, carrier_addresses=["127.0.0.1/32"]))
        print(
            f"LiveKit SIP on udp/tcp 127.0.0.1:{ports.sip}: call sip:{numbers[0]}@127.0.0.1:{ports.sip} "
            f"(inbound trunk {done.inbound_trunk_id}, dispatch rule {done.dispatch_rule_id})",
            flush=True,
        )

    return prepare, setup


LOCAL_NUMBER = "+15550100"  # what a local stack's inbound trunk answers when no agent names a number


def _inbound_numbers(settings: Settings) -> list[str]:
    """SWITCHBOARD_LIVEKIT_NUMBERS, else every number the agents answer."""
    if settings.livekit_numbers.strip():
        return [n.strip() for n in settings.livekit_numbers.split(",") if n.strip()]
    from switchboard.agent.config import load_agent_config
    from switchboard.agent.directory import AgentDirectory

    directory = AgentDirectory(load_agent_config(settings.agent_config), settings.agents_dir)
    return sorted({number for agent in directory.agents() for number in agent.numbers})


def _livekit_setup(args: argparse.Namespace) -> int:
    """``switchboard livekit setup``: the trunk and dispatch rule, against LIVEKIT_URL."""
    settings = _settings(args, "livekit")
    from switchboard.telephony.livekit_setup import ensure_sip_setup

    numbers = args.number or _inbound_numbers(settings)
    if not numbers:
        raise ConfigError("livekit setup: give --number (or SWITCHBOARD_LIVEKIT_NUMBERS, or agents' numbers)")
    done = asyncio.run(
        ensure_sip_setup(
            settings,
            numbers,
            outbound_address=args.outbound_address,
            carrier_addresses=args.carrier_address,
        )
    )
    print(f"inbound trunk {done.inbound_trunk_id} answers {', '.join(numbers)}")
    print(f"dispatch rule {done.dispatch_rule_id}: each call in its own call-… room")
    if done.unassigned_trunk_id:
        print(f"catch-all trunk {done.unassigned_trunk_id}: other numbers are refused (486)")
    if done.outbound_trunk_id:
        print(f"outbound trunk {done.outbound_trunk_id}: set SWITCHBOARD_LIVEKIT_OUTBOUND_TRUNK={done.outbound_trunk_id}")
    print("; ".join(done.changed) or "nothing to change")
    return 0



def _call(args: argparse.Namespace) -> int:
    from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
    from switchboard.loadtest.report import format_summary, write_json

    turns = [
        CallerTurn(audio=Path(path), barge_in_after_ms=args.barge_in_ms if i in args.barge_in else None)
        for i, path in enumerate(args.audio)
    ]
    result = asyncio.run(
        run_call(
            args.url,
            CallScript(turns=turns),
            auth_token=args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN"),
            record_path=Path(args.record) if args.record else None,
            transcribe=not args.no_transcribe,
        )
    )
    print(format_summary(result))
    if args.json:
        write_json(result, Path(args.json))
    return 0 if result.outcome in ("completed", "agent_hung_up") else 1


def _dial_csv(args: argparse.Namespace, api_key: str) -> int:
    from switchboard.dialer import calling_hours, dial_batch, read_rows, write_results

    rows = read_rows(Path(args.csv))
    hours = calling_hours(args.hours) if args.hours else None

    def progress(r) -> None:
        print(f"row {r.row}: {r.to[:-4]}**** {r.status} {r.call_sid or r.error}", flush=True)

    results = asyncio.run(
        dial_batch(
            args.url, api_key, rows, concurrency=args.concurrency, retries=args.retries, hours=hours,
            pace=not args.no_pace, progress=progress,
        )
    )
    write_results(Path(args.results), results)
    placed = sum(r.status == "placed" for r in results)
    print(f"{placed}/{len(results)} placed; results in {args.results}")
    return 0 if placed == len(results) else 1


def _dial(args: argparse.Namespace) -> int:
    """``POST /calls`` on an orchestrator (or a standalone agent): place one outbound call."""
    import httpx

    if args.csv:
        return _dial_csv(args, args.api_key or os.environ.get("SWITCHBOARD_API_KEY") or "")
    if not args.number:
        raise ConfigError("dial: give a number, or --csv FILE")

    from switchboard.dialer import REQUEST_TIMEOUT_SECS

    body = {"to": args.number, "agent": args.agent, "from": args.from_number, "voicemail": args.voicemail,
            "ingress": args.ingress}
    api_key = args.api_key or os.environ.get("SWITCHBOARD_API_KEY") or ""
    try:
        response = httpx.post(
            f"{args.url.rstrip('/')}/calls",
            json={k: v for k, v in body.items() if v is not None},
            headers={"X-API-Key": api_key},
            timeout=REQUEST_TIMEOUT_SECS,
        )
    except httpx.HTTPError as e:
        print(f"switchboard dial: {args.url} unreachable: {e}", file=sys.stderr)
        return 1
    if response.status_code != 201:
        print(f"switchboard dial: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    placed = response.json()
    print(f"placed {placed['call_sid']} ({placed['status']}) with agent {placed.get('agent') or '(by number)'}")
    return 0


def _add_server_args(p: argparse.ArgumentParser, *, agent: bool = True) -> None:
    p.add_argument("--port", type=int, default=None, help="listen port (default SWITCHBOARD_PORT or 8080)")
    if agent:
        p.add_argument("--agent", default=None, help="agent config YAML (default: the example receptionist)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="start Redis, an orchestrator and workers: the local stack on :8080")
    _add_server_args(p)
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--max-calls", type=int, default=None, help="calls per worker (SWITCHBOARD_MAX_CALLS)")
    p.add_argument("--data-dir", default="var",
                   help="owner-only directory of the operator key, and of a spawned Redis's password and AOF")
    p.add_argument("--livekit", action="store_true",
                   help="also run a LiveKit server and LiveKit SIP on loopback (SWITCHBOARD_LIVEKIT=1)")
    p.set_defaults(func=_up)

    p = sub.add_parser("livekit", help="LiveKit SIP objects of the call path")
    livekit_sub = p.add_subparsers(dest="livekit_command", required=True)
    p = livekit_sub.add_parser("setup", help="create or update the inbound trunk and the call-… dispatch rule")
    p.add_argument("--number", action="append", default=[],
                   help="a number (E.164) the inbound trunk answers; repeatable (default: the agents' numbers)")
    p.add_argument("--carrier-address", action="append", default=[], metavar="CIDR",
                   help="the carrier's signalling addresses: calls from there to other numbers are refused (486)")
    p.add_argument("--outbound-address", default=None, metavar="HOST[:PORT]",
                   help="also an outbound trunk towards the carrier's SIP address")
    p.add_argument("--agent", default=None, help="agent config YAML whose numbers to use")
    p.set_defaults(func=_livekit_setup)

    p = sub.add_parser("orchestrator", help="run one orchestrator (webhooks, placement, stats)")
    _add_server_args(p, agent=False)
    p.set_defaults(func=_orchestrator)

    p = sub.add_parser("worker", help="run one worker process of the pool")
    _add_server_args(p)
    p.add_argument("--worker-id", default=None, help="stable id in the registry (default host-pid)")
    p.add_argument("--max-calls", type=int, default=None, help="calls this worker runs at once")
    p.set_defaults(func=_worker)

    p = sub.add_parser("serve", help="run a standalone agent (no Redis): webhook + media stream")
    _add_server_args(p)
    p.set_defaults(func=_serve)

    p = sub.add_parser("call", help="place a simulated Twilio call and report what the agent said")
    p.add_argument("audio", nargs="+", help="WAV files the caller says, one per turn")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="orchestrator or standalone agent URL")
    p.add_argument("--json", default=None, help="write a JSON report here")
    p.add_argument("--record", default="recordings/call.wav", help="stereo WAV: caller left, agent right")
    p.add_argument("--barge-in", type=int, action="append", default=[], metavar="TURN",
                   help="turn index (0-based) spoken over the agent's previous reply; repeatable")
    p.add_argument("--barge-in-ms", type=int, default=800, help="how long after the agent starts to barge in")
    p.add_argument("--auth-token", default=None, help="sign requests like Twilio (default TWILIO_AUTH_TOKEN)")
    p.add_argument("--no-transcribe", action="store_true", help="skip transcribing the agent's audio")
    p.set_defaults(func=_call)

    p = sub.add_parser("dial", help="place an outbound call through Twilio or LiveKit (POST /calls)")
    p.add_argument("number", nargs="?", help="the number to call, E.164 (+15551234567)")
    p.add_argument("--csv", default=None, help="batch: a CSV with columns to[,agent,from,voicemail,ingress]")
    p.add_argument("--concurrency", type=int, default=2, help="batch: calls placed at once")
    p.add_argument("--retries", type=int, default=2, help="batch: retries of a 5xx or unreachable")
    p.add_argument(
        "--no-pace", action="store_true",
        help="batch: place calls without waiting for the pool's headroom (GET /stats)",
    )
    p.add_argument("--hours", default=None, help="batch: calling hours, local time, e.g. 09:00-18:00")
    p.add_argument("--results", default="dial-results.csv", help="batch: the result CSV")
    p.add_argument("--agent", default=None, help="agent name (default: the agent of the --from number)")
    p.add_argument("--from", dest="from_number", default=None, help="caller ID (default SWITCHBOARD_OUTBOUND_FROM)")
    p.add_argument("--voicemail", default=None, help="message to leave if a machine answers (Twilio)")
    p.add_argument("--ingress", choices=("twilio", "livekit"), default=None,
                   help="place it through Twilio or LiveKit (default SWITCHBOARD_OUTBOUND_INGRESS)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="orchestrator or standalone agent URL")
    p.add_argument("--api-key", default=None, help="X-API-Key (default SWITCHBOARD_API_KEY)")
    p.set_defaults(func=_dial)

    from switchboard.emulators.commands import add_commands as add_emulator_commands
    from switchboard.loadtest.commands import add_commands as add_loadtest_commands
    from switchboard.records.commands import add_commands as add_records_commands
    from switchboard.testing.commands import add_commands as add_testing_commands

    add_loadtest_commands(sub)
    add_records_commands(sub)
    add_testing_commands(sub)
    add_emulator_commands(sub)
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
