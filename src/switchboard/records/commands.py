"""``switchboard records ...``: the call history from the command line, straight from the
database named by ``SWITCHBOARD_DATABASE_URL`` (holding its credentials is the authorization).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from switchboard.call_ids import is_call_id
from switchboard.records.models import CallQuery
from switchboard.records.store import CallStore


def _store() -> CallStore:
    from switchboard.records.archive import store_from_settings
    from switchboard.settings import get_settings

    return store_from_settings(get_settings())


def _with_store(work: Callable[[CallStore], Awaitable[int]]) -> int:
    async def run() -> int:
        store = _store()
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def fetch_recording(call_id: str, destination: Path | None = None) -> Path:
    """Write a stored call's recording to ``destination`` (a temporary file by default)."""

    async def work(store: CallStore) -> int:
        found = await store.recording(call_id)
        if found is None:
            raise FileNotFoundError(f"no stored recording of call {call_id}")
        target.write_bytes(found[1])
        return 0

    target = destination or Path(tempfile.mkstemp(prefix=f"{call_id}-", suffix=".flac")[1])
    _with_store(work)
    return target


def resolve_recording(name: str) -> str:
    """A recording file as given, or, for a stored call's id, its recording fetched to a
    temporary file that is removed when the process exits."""
    if Path(name).exists() or not is_call_id(name):
        return name
    path = fetch_recording(name)
    atexit.register(path.unlink, missing_ok=True)
    return str(path)


def _list(args: argparse.Namespace) -> int:
    query = CallQuery(number=args.number, agent=args.agent, outcome=args.outcome, limit=args.limit)

    async def work(store: CallStore) -> int:
        page = await store.list(query)
        for c in page.calls:
            secs = f"{c.duration_secs:6.1f} s" if c.duration_secs is not None else "     – "
            audio = "audio" if c.recording else "     "
            print(
                f"{c.started_at:%Y-%m-%d %H:%M:%S}  {c.call_id:44}  {c.outcome:10} {secs} {audio}  {c.from_number or '-'}"
            )
        print(f"{len(page.calls)} of {page.total} call(s)")
        return 0

    return _with_store(work)


def _fetch(args: argparse.Namespace) -> int:
    print(fetch_recording(args.call_id, Path(args.output) if args.output else None))
    return 0


def _delete(args: argparse.Namespace) -> int:
    async def work(store: CallStore) -> int:
        if not await store.delete(args.call_id):
            print(f"switchboard records: no call {args.call_id}", file=sys.stderr)
            return 1
        print(f"deleted {args.call_id} (record and recording)")
        return 0

    return _with_store(work)


def _purge(args: argparse.Namespace) -> int:
    async def work(store: CallStore) -> int:
        purged = await store.purge_older_than(args.days)
        print(f"deleted {len(purged)} call(s) older than {args.days:g} days")
        return 0

    return _with_store(work)


def _dead_letters(args: argparse.Namespace) -> int:
    async def work(store: CallStore) -> int:
        for d in await store.dead_letters(args.limit):
            print(
                f"{d.id:6}  {d.created_at:%Y-%m-%d %H:%M:%S}  {d.call_id:44}  {d.attempts} tries  {d.last_error}  {d.url}"
            )
        return 0

    return _with_store(work)


def _replay(args: argparse.Namespace) -> int:
    from switchboard.agent.config import load_agent_config
    from switchboard.records.webhooks import WebhookSender
    from switchboard.settings import get_settings

    settings = get_settings()
    agent = load_agent_config(args.agent or settings.agent_config)
    if agent.webhook is None:
        print(
            "switchboard records: the agent config has no webhook secret to sign with",
            file=sys.stderr,
        )
        return 2
    secret = agent.webhook.secret.get_secret_value()

    async def work(store: CallStore) -> int:
        sender = WebhookSender(
            store,
            max_attempts=1,
            backoff_secs=settings.webhook_backoff_secs,
            timeout_secs=settings.webhook_timeout_secs,
        )
        try:
            delivered = await sender.replay(args.id, secret)
        finally:
            await sender.close()
        messages: dict[Any, tuple[str, int]] = {
            None: (f"no dead letter {args.id}", 1),
            False: (f"dead letter {args.id}: the receiver refused it again", 1),
            True: (f"dead letter {args.id} delivered", 0),
        }
        message, code = messages[delivered]
        print(message, file=sys.stderr if code else sys.stdout)
        return code

    return _with_store(work)


def _redact(args: argparse.Namespace) -> int:
    from switchboard.agent.config import load_agent_config
    from switchboard.agent.directory import AgentDirectory
    from switchboard.records.redaction import redact
    from switchboard.settings import get_settings

    settings = get_settings()
    default = load_agent_config(args.agent or settings.agent_config)
    agents = AgentDirectory(default, None if args.agent else settings.agents_dir)

    async def ids(store: CallStore) -> list[str]:
        if args.call_id:
            return [args.call_id]
        found: list[str] = []
        while True:
            page = await store.list(CallQuery(agent=args.only_agent, limit=500, offset=len(found)))
            found += [c.call_id for c in page.calls]
            if len(found) >= page.total or not page.calls:
                return found

    async def work(store: CallStore) -> int:
        todo = await ids(store)
        redacted = skipped = failed = spans = audio_spans = 0
        for n, call_id in enumerate(todo, 1):
            call = await store.get(call_id)
            agent = None if call is None else (default if args.agent else agents.by_name(call.agent))
            if call is None or agent is None or not agent.redaction.enabled:
                skipped += 1
                why = "not stored" if call is None else "no agent of that name redacts"
                print(f"[{n}/{len(todo)}] {call_id}: skipped ({why})", file=sys.stderr)
                continue
            found = await store.recording(call_id)
            try:
                done = await redact(call, found[1] if found else None, agent)
                await store.save(done.call, done.audio)
            except Exception as e:  # one call's failure is reported; the others go on
                failed += 1
                print(f"[{n}/{len(todo)}] {call_id}: failed ({type(e).__name__})", file=sys.stderr)
                continue
            redacted += 1
            spans += sum(done.found.values())
            audio_spans += done.audio_spans
            print(
                f"[{n}/{len(todo)}] {call_id}: {sum(done.found.values())} text span(s), {done.audio_spans} audio span(s)",
                file=sys.stderr,
            )
        print(
            f"redacted {redacted} call(s): {spans} PII span(s) of text, {audio_spans} of audio; "
            f"{skipped} skipped, {failed} failed"
        )
        return 1 if failed else 0

    return _with_store(work)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``records`` and its subcommands on the main CLI."""
    records = subparsers.add_parser(
        "records", help="the call history: list, fetch, delete, purge, redact, webhooks"
    )
    sub = records.add_subparsers(dest="records_command", required=True)

    p = sub.add_parser("list", help="recent calls, newest first")
    p.add_argument("--number", default=None, help="the caller's or the called number")
    p.add_argument("--agent", default=None)
    p.add_argument("--outcome", default=None, help="completed or failed")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_list)

    p = sub.add_parser("fetch", help="write a call's recording (FLAC) to a file")
    p.add_argument("call_id")
    p.add_argument("-o", "--output", default=None, help="default: a temporary file")
    p.set_defaults(func=_fetch)

    p = sub.add_parser("delete", help="delete one call's record and recording (GDPR erasure)")
    p.add_argument("call_id")
    p.set_defaults(func=_delete)

    p = sub.add_parser("purge", help="delete calls (records and audio) older than N days")
    p.add_argument("--days", type=float, required=True)
    p.set_defaults(func=_purge)

    p = sub.add_parser(
        "redact", help="apply the agents' current PII redaction to stored calls (text and audio)"
    )
    p.add_argument("call_id", nargs="?", default=None, help="one call (default: every stored call)")
    p.add_argument(
        "--agent",
        default=None,
        help="apply this agent config's rules to every call (default: each call's own agent, "
        "from SWITCHBOARD_AGENT_CONFIG and SWITCHBOARD_AGENTS_DIR)",
    )
    p.add_argument("--only-agent", default=None, help="only calls answered by the agent of this name")
    p.set_defaults(func=_redact)

    p = sub.add_parser("dead-letters", help="post-call webhooks that failed every attempt")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=_dead_letters)

    p = sub.add_parser(
        "replay", help="send a dead-lettered webhook again (signed with the agent's secret)"
    )
    p.add_argument("id", type=int)
    p.add_argument(
        "--agent",
        default=None,
        help="agent config with the webhook secret (default SWITCHBOARD_AGENT_CONFIG)",
    )
    p.set_defaults(func=_replay)
