"""``CallStore``: the call history in SQLite or PostgreSQL, with each call's recording beside it.

SQLAlchemy is used synchronously on a small thread pool of the store's own (its size does not
grow with calls), so no query ever runs on the event loop. Each call's row is written once by
the worker that ran it, as an upsert by ``call_id``: a retried or duplicated save is harmless,
and any number of workers and orchestrators can share one database. A call carried on by another
worker after its stream was lost is one row, the later stream's record added to the earlier
one's; a save from any other stream of a stored call is refused (``CallStore.save``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, delete, event, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from switchboard.call_log import LogEvent, TransferSummary
from switchboard.errors import SwitchboardError
from switchboard.private_files import FILE_MODE, create_private_file
from switchboard.records.models import (
    CallAnalysis,
    CallPage,
    CallQuery,
    CallSummary,
    DeadLetter,
    StoredCall,
)
from switchboard.records.schema import CallRow, DeadLetterRow
from switchboard.records.storage import RecordingStorage

MIGRATIONS = Path(__file__).parent / "migrations"
_DB_THREADS = 2
_MIGRATION_LOCK_ID = 0x5B_CA11  # PostgreSQL advisory lock held while one process migrates
_SUMMARY_FIELDS = tuple(CallSummary.model_fields)
T = TypeVar("T")
SaveResult = Literal["saved", "merged", "refused"]


class RecordsError(SwitchboardError):
    """The call history could not be read or written."""


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so many processes can write."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=_DB_THREADS, max_overflow=0)
    if parsed.database and parsed.database != ":memory:":
        # Callers' numbers and words: owner-only (SQLite gives -wal and -shm the file's mode).
        create_private_file(Path(parsed.database))
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def migrate(engine: Engine) -> None:
    """``alembic upgrade head``, one process at a time."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """SQLite has no advisory locks: processes sharing a database file take a file lock."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with os.fdopen(os.open(f"{database}.migrate.lock", os.O_WRONLY | os.O_CREAT, FILE_MODE), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _row_values(call: StoredCall) -> dict[str, Any]:
    data = call.model_dump(mode="json")
    values = {k: data[k] for k in _SUMMARY_FIELDS if k not in ("version", "started_at", "ended_at")}
    values.update(
        started_at=call.started_at,
        ended_at=call.ended_at,
        transcript=data["transcript"],
        turns=data["turns"],
        events=data["events"],
        intents=data["intents"],
        tool_calls=data["tool_calls"],
        transfer=data["transfer"],
        provider_fallbacks=data["provider_fallbacks"],
        analysis=data["analysis"],
        saved_at=dt.datetime.now(dt.UTC),
    )
    return values


def _decide(row: CallRow | None, call: StoredCall) -> SaveResult:
    """How a save meets the row already stored for its call id (None: there is none).

    The same stream (or a record without one) saves again harmlessly. A different stream of
    the same call is added to the row only if it carried the call on (``resumed``: a worker
    placed by ``/twilio/resume`` that picked the conversation up); any other is refused, so
    a stray or hostile stream can never replace what a call left behind.
    """
    if row is None or row.stream_sid is None or call.stream_sid is None or row.stream_sid == call.stream_sid:
        return "saved"
    return "merged" if call.resumed else "refused"


def _merged(first: StoredCall, later: StoredCall) -> StoredCall:
    """One record of a call carried on across streams: what the earlier streams recorded, then
    the later one (its times shifted to the call's start), which also gives how it ended."""
    shift = max((later.started_at - first.started_at).total_seconds(), 0.0)
    return later.model_copy(
        update={
            "call_sid": first.call_sid or later.call_sid,
            "from_number": first.from_number or later.from_number,
            "to_number": first.to_number or later.to_number,
            "started_at": first.started_at,
            "recording": first.recording or later.recording,
            "resumed": True,
            "transcript": first.transcript
            + [e.model_copy(update={"t": e.t + shift}) for e in later.transcript],
            "events": first.events
            + [e.model_copy(update={"at_s": e.at_s + shift}) for e in later.events],
            "turns": first.turns + [t.model_copy(update={"at_s": t.at_s + shift}) for t in later.turns],
            "intents": first.intents + later.intents,
            "tool_calls": first.tool_calls
            + [t.model_copy(update={"at_s": t.at_s + shift}) for t in later.tool_calls],
            "transfer": later.transfer or first.transfer,
            "provider_fallbacks": first.provider_fallbacks + later.provider_fallbacks,
        }
    )


def _stored(row: CallRow) -> StoredCall:
    return StoredCall.model_validate(
        {c: getattr(row, c) for c in StoredCall.model_fields if c != "version"}
    )


def _summary(row: CallRow) -> CallSummary:
    return CallSummary.model_validate(
        {c: getattr(row, c) for c in _SUMMARY_FIELDS if c != "version"}
    )


class CallStore:
    """Save, find, page through and delete finished calls (rows and recordings)."""

    def __init__(self, database_url: str, recordings: RecordingStorage):
        self.recordings = recordings
        self._engine = create_db_engine(database_url)
        self._executor = ThreadPoolExecutor(_DB_THREADS, thread_name_prefix="records-db")

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    async def open(self) -> None:
        """Bring the schema up to date (every process may call this at start-up)."""
        await self._run(migrate, self._engine)

    async def close(self) -> None:
        await self._run(self._engine.dispose)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def save(self, call: StoredCall, audio: bytes | None = None) -> SaveResult:
        """Store the recording (if any, and ``call.recording`` names its key), then the row.

        A row is never replaced by another stream of the same call id (see ``_decide``):
        returns ``saved``, ``merged`` (a resumed call's later stream added to its record) or
        ``refused``.
        """
        return await self._run(self._save, call, audio)

    def _save(self, call: StoredCall, audio: bytes | None) -> SaveResult:
        if audio is not None and call.recording is None:
            raise RecordsError(f"{call.call_id}: audio given without a recording reference")
        for _attempt in range(2):
            with Session(self._engine) as session, session.begin():
                row = session.get(CallRow, call.call_id, with_for_update=self.dialect == "postgresql")
                result = _decide(row, call)
                if result == "refused":
                    return result
                if result == "merged":
                    assert row is not None
                    call = _merged(_stored(row), call)
                    # The recording is the first stream's: the later stream's audio would
                    # overwrite that file (same key), so it is kept only if the first had none.
                    if row.recording is not None:
                        audio = None
                if audio is not None:
                    assert call.recording is not None
                    self.recordings.put(call.recording.key, audio)
                values = _row_values(call)
                insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
                statement = insert(CallRow).values(**values)
                if row is None:
                    # Two first saves at once (two streams of one new call): one wins, the other decides again.
                    inserted = session.execute(statement.on_conflict_do_nothing(index_elements=[CallRow.call_id]))
                    if not inserted.rowcount:
                        continue
                else:
                    session.execute(statement.on_conflict_do_update(
                        index_elements=[CallRow.call_id],
                        set_={k: statement.excluded[k] for k in values if k != "call_id"},
                    ))
            return result
        raise RecordsError(f"{call.call_id}: the record changed under every save attempt")

    async def amend(self, call_id: str, late: LogEvent, transfer: TransferSummary | None) -> bool:
        """Add an event the call's log learnt after it was saved (a cold transfer's result) to
        its stored record, with the transfer it updates; False if the call is not stored."""
        return await self._run(self._amend, call_id, late, transfer)

    def _amend(self, call_id: str, late: LogEvent, transfer: TransferSummary | None) -> bool:
        with Session(self._engine) as session, session.begin():
            row = session.get(CallRow, call_id, with_for_update=self.dialect == "postgresql")
            if row is None:
                return False
            row.events = [*row.events, late.model_dump(mode="json")]
            if transfer is not None:
                row.transfer = transfer.model_dump(mode="json")
        return True

    async def save_analysis(self, call_id: str, analysis: CallAnalysis) -> None:
        """Add the post-call analysis to a stored call (leaving the rest of its row as it is)."""
        await self._run(self._save_analysis, call_id, analysis)

    def _save_analysis(self, call_id: str, analysis: CallAnalysis) -> None:
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(CallRow).where(CallRow.call_id == call_id).values(analysis=analysis.model_dump(mode="json"))
            )

    async def get(self, call_id: str) -> StoredCall | None:
        return await self._run(self._get, call_id)

    def _get(self, call_id: str) -> StoredCall | None:
        with Session(self._engine) as session:
            row = session.get(CallRow, call_id)
            return _stored(row) if row else None

    async def list(self, query: CallQuery | None = None) -> CallPage:
        return await self._run(self._list, query or CallQuery())

    def _list(self, query: CallQuery) -> CallPage:
        conditions = []
        if query.since is not None:
            conditions.append(CallRow.started_at >= query.since)
        if query.until is not None:
            conditions.append(CallRow.started_at < query.until)
        if query.number:
            conditions.append(
                or_(CallRow.from_number == query.number, CallRow.to_number == query.number)
            )
        if query.agent:
            conditions.append(CallRow.agent == query.agent)
        if query.outcome:
            conditions.append(CallRow.outcome == query.outcome)
        with Session(self._engine) as session:
            total = (
                session.scalar(select(func.count()).select_from(CallRow).where(*conditions)) or 0
            )
            rows = session.scalars(
                select(CallRow)
                .where(*conditions)
                .order_by(CallRow.started_at.desc(), CallRow.call_id)
                .limit(query.limit)
                .offset(query.offset)
            ).all()
            calls = [_summary(r) for r in rows]
        return CallPage(calls=calls, total=total, limit=query.limit, offset=query.offset)

    async def recording(self, call_id: str) -> tuple[CallSummary, bytes] | None:
        """The call and its audio, or None if either is missing."""
        return await self._run(self._recording, call_id)

    def _recording(self, call_id: str) -> tuple[CallSummary, bytes] | None:
        call = self._get(call_id)
        if call is None or call.recording is None:
            return None
        audio = self.recordings.get(call.recording.key)
        return (call, audio) if audio is not None else None

    async def delete(self, call_id: str) -> bool:
        """Delete everything of one call (recording, row, dead letters); False if unknown."""
        return await self._run(self._delete, call_id)

    def _delete(self, call_id: str) -> bool:
        with Session(self._engine) as session, session.begin():
            row = session.get(CallRow, call_id, with_for_update=self.dialect == "postgresql")
            if row is None:
                return False
            # Audio first: if deleting it fails, the row still points at it for a retry.
            if row.recording:
                self.recordings.delete(row.recording["key"])
            session.execute(delete(DeadLetterRow).where(DeadLetterRow.call_id == call_id))
            session.delete(row)
        return True

    async def purge_older_than(self, days: float) -> list[str]:
        """Delete every call that started more than ``days`` ago; returns their ids."""
        return await self._run(self._purge, dt.datetime.now(dt.UTC) - dt.timedelta(days=days))

    def _purge(self, cutoff: dt.datetime) -> list[str]:
        with Session(self._engine) as session:
            ids = list(session.scalars(select(CallRow.call_id).where(CallRow.started_at < cutoff)))
        return [call_id for call_id in ids if self._delete(call_id)]

    # Dead letters of the post-call webhook.

    async def add_dead_letter(
        self, call_id: str, url: str, payload: str, attempts: int, error: str
    ) -> int:
        return await self._run(self._add_dead_letter, call_id, url, payload, attempts, error)

    def _add_dead_letter(
        self, call_id: str, url: str, payload: str, attempts: int, error: str
    ) -> int:
        row = DeadLetterRow(
            call_id=call_id,
            url=url,
            payload=payload,
            attempts=attempts,
            last_error=error[:2000],
            created_at=dt.datetime.now(dt.UTC),
        )
        with Session(self._engine) as session, session.begin():
            session.add(row)
            session.flush()
            return row.id

    async def dead_letters(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        return await self._run(self._dead_letters, limit, offset)

    def _dead_letters(self, limit: int, offset: int) -> list[DeadLetter]:
        with Session(self._engine) as session:
            rows = session.scalars(
                select(DeadLetterRow).order_by(DeadLetterRow.id.desc()).limit(limit).offset(offset)
            ).all()
            return [DeadLetter.model_validate(r) for r in rows]

    async def dead_letter_payload(self, letter_id: int) -> tuple[DeadLetter, str] | None:
        return await self._run(self._dead_letter_payload, letter_id)

    def _dead_letter_payload(self, letter_id: int) -> tuple[DeadLetter, str] | None:
        with Session(self._engine) as session:
            row = session.get(DeadLetterRow, letter_id)
            return (DeadLetter.model_validate(row), row.payload) if row else None

    async def remove_dead_letter(self, letter_id: int) -> bool:
        return await self._run(self._remove_dead_letter, letter_id)

    def _remove_dead_letter(self, letter_id: int) -> bool:
        with Session(self._engine) as session, session.begin():
            result = session.execute(delete(DeadLetterRow).where(DeadLetterRow.id == letter_id))
            return bool(result.rowcount)
