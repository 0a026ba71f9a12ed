"""The call history on real SQLite and real PostgreSQL: round trips, filters and paging,
upserts, deletion with the audio, retention, restarts, and many writers at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from switchboard.call_log import HangUp, KeypadPress, ToolCall, TransferSummary, Turn
from switchboard.records.models import (
    CallPage,
    CallQuery,
    RecordingRef,
    StoredCall,
    TranscriptEntry,
)
from switchboard.records.storage import LocalRecordingStorage
from switchboard.records.store import CallStore

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def a_call(call_id: str, *, started: dt.datetime = NOW, **fields) -> StoredCall:
    return StoredCall(
        call_id=call_id,
        call_sid=f"CA{call_id}",
        from_number=fields.pop("from_number", "+15550001111"),
        to_number=fields.pop("to_number", "+15559990000"),
        agent=fields.pop("agent", "receptionist"),
        ingress="twilio",
        started_at=started,
        ended_at=started + dt.timedelta(seconds=42),
        outcome=fields.pop("outcome", "completed"),
        **fields,
    )


@pytest.fixture
async def store(database_url: str, tmp_path: Path):
    store = CallStore(database_url, LocalRecordingStorage(tmp_path / "recordings"))
    await store.open()
    yield store
    await store.close()


async def test_a_saved_call_reads_back_whole(store: CallStore) -> None:
    call = a_call(
        "call-1",
        failure_reason=None,
        transcript=[
            TranscriptEntry(role="agent", text="Hello.", t=0.1),
            TranscriptEntry(role="user", text="Hi", t=2.5),
        ],
        turns=[
            Turn(
                transcript="Hi",
                vad_stop_ms=200,
                transcript_ms=310.5,
                turn_end_ms=320,
                bot_started_ms=455.2,
            )
        ],
        events=[KeypadPress(at_s=3.0, digit="5", intent="hours"), HangUp(at_s=9, ended_by="caller")],
        intents=["hours"],
        tool_calls=[ToolCall(tool="lookup", arguments={"id": 7}, ok=True, result={"open": "9"})],
        transfer=TransferSummary(intent="desk", target="+15550002222", mode="cold", outcome="busy"),
        ended_by="caller",
    )
    await store.save(call)
    loaded = await store.get("call-1")
    assert loaded == call
    assert loaded.started_at.tzinfo is not None and loaded.started_at == NOW
    assert await store.get("call-unknown") is None


async def test_saving_the_same_call_again_updates_its_one_row(store: CallStore) -> None:
    await store.save(a_call("call-1", outcome="failed"))
    await store.save(a_call("call-1", outcome="completed", intents=["goodbye"]))
    page = await store.list()
    assert page.total == 1
    loaded = await store.get("call-1")
    assert loaded is not None and loaded.outcome == "completed" and loaded.intents == ["goodbye"]


def _stream(call_id: str, stream_sid: str, audio_secs: float, **fields) -> StoredCall:
    """A record of one stream of a call, with a recording (same key for every stream of it)."""
    return a_call(
        call_id,
        stream_sid=stream_sid,
        recording=RecordingRef(
            key=f"{NOW:%Y/%m/%d}/{call_id}.flac", sample_rate=16000, duration_secs=audio_secs, bytes=4
        ),
        **fields,
    )


async def test_another_stream_of_a_stored_call_never_replaces_its_record(
    store: CallStore, tmp_path: Path
) -> None:
    # Issue 24: a second stream on the same call id turned 27.8 s with the caller's number into 4.8 s with none.
    first = _stream("call-kept", "MZfirst", 27.8, transcript=[TranscriptEntry(role="user", text="hi", t=1.0)])
    saved = await store.save(first, b"real")
    stray = _stream("call-kept", "MZstray", 4.8, from_number=None, outcome="failed")
    refused = await store.save(stray, b"fake")
    assert await store.get("call-kept") == first
    audio_file = tmp_path / "recordings" / f"{NOW:%Y/%m/%d}" / "call-kept.flac"
    assert audio_file.read_bytes() == b"real", "the stray stream's audio never reached the file"
    assert (saved, refused) == ("saved", "refused")
    # The stream that made the record may save it again (a retry).
    assert await store.save(first.model_copy(update={"outcome": "failed"})) == "saved"


async def test_a_resumed_stream_adds_to_the_record_of_the_stream_it_carried_on(store: CallStore) -> None:
    first = _stream(
        "call-moved", "MZfirst", 20.0, outcome="handed_off", intents=["boats"],
        transcript=[TranscriptEntry(role="user", text="boats", t=2.0)],
    )  # fmt: skip
    await store.save(first, b"part1")
    later = _stream(
        "call-moved", "MZlater", 5.0, started=NOW + dt.timedelta(seconds=30), resumed=True,
        from_number=None, intents=["food"], transcript=[TranscriptEntry(role="user", text="food", t=1.0)],
    )  # fmt: skip
    result = await store.save(later, b"part2")
    merged = await store.get("call-moved")
    assert merged is not None and merged.resumed
    assert merged.started_at == NOW and merged.from_number == "+15550001111", "the call's start and caller"
    assert merged.outcome == "completed" and merged.stream_sid == "MZlater", "how the call ended"
    assert merged.intents == ["boats", "food"]
    assert [(e.text, e.t) for e in merged.transcript] == [("boats", 2.0), ("food", 31.0)]
    assert merged.recording == first.recording
    found = await store.recording("call-moved")
    assert found is not None and found[1] == b"part1", "the first stream's recording is kept"
    assert result == "merged"


async def test_the_list_filters_by_time_number_agent_and_outcome_and_pages_newest_first(
    store: CallStore,
) -> None:
    for i in range(5):
        await store.save(a_call(f"call-{i}", started=NOW - dt.timedelta(hours=i)))
    await store.save(
        a_call(
            "call-other",
            started=NOW - dt.timedelta(days=3),
            from_number="+4420",
            agent="sales",
            outcome="failed",
        )
    )

    page = await store.list(CallQuery(limit=2))
    assert page.total == 6 and [c.call_id for c in page.calls] == ["call-0", "call-1"]
    page = await store.list(CallQuery(limit=2, offset=4))
    assert [c.call_id for c in page.calls] == ["call-4", "call-other"]

    recent = await store.list(CallQuery(since=NOW - dt.timedelta(hours=2, minutes=30)))
    assert {c.call_id for c in recent.calls} == {"call-0", "call-1", "call-2"}
    older = await store.list(CallQuery(until=NOW - dt.timedelta(hours=3, minutes=30)))
    assert {c.call_id for c in older.calls} == {"call-4", "call-other"}
    assert [c.call_id for c in (await store.list(CallQuery(number="+4420"))).calls] == [
        "call-other"
    ]
    assert (await store.list(CallQuery(number="+15559990000"))).total == 6  # the called number too
    assert [c.call_id for c in (await store.list(CallQuery(agent="sales"))).calls] == ["call-other"]
    assert [c.call_id for c in (await store.list(CallQuery(outcome="failed"))).calls] == [
        "call-other"
    ]
    assert (await store.list(CallQuery(agent="nobody"))).total == 0


def _recorded(call_id: str, started: dt.datetime = NOW) -> StoredCall:
    key = f"{started:%Y/%m/%d}/{call_id}.flac"
    return a_call(
        call_id,
        started=started,
        recording=RecordingRef(key=key, sample_rate=16000, duration_secs=1.0, bytes=4),
    )


async def test_deleting_a_call_removes_its_row_its_audio_and_its_dead_letters(
    store: CallStore, tmp_path: Path
) -> None:
    await store.save(_recorded("call-gdpr"), b"fLaC")
    await store.save(_recorded("call-kept"), b"fLaC")
    await store.add_dead_letter("call-gdpr", "http://127.0.0.1:9/hook", "{}", 5, "HTTP 500")
    audio_file = tmp_path / "recordings" / f"{NOW:%Y/%m/%d}" / "call-gdpr.flac"
    assert audio_file.read_bytes() == b"fLaC"
    found = await store.recording("call-gdpr")
    assert found is not None and found[1] == b"fLaC"

    assert await store.delete("call-gdpr") is True
    assert await store.get("call-gdpr") is None
    assert not audio_file.exists()
    assert await store.recording("call-gdpr") is None
    assert await store.dead_letters() == []
    assert await store.delete("call-gdpr") is False
    assert (
        await store.get("call-kept") is not None and await store.recording("call-kept") is not None
    )


async def test_retention_deletes_old_calls_and_their_audio_only(
    store: CallStore, tmp_path: Path
) -> None:
    old_start = NOW - dt.timedelta(days=31)
    await store.save(_recorded("call-old", old_start), b"old!")
    await store.save(_recorded("call-new"), b"new!")
    old_file = tmp_path / "recordings" / f"{old_start:%Y/%m/%d}" / "call-old.flac"
    assert old_file.exists()

    assert await store.purge_older_than(30) == ["call-old"]
    assert await store.get("call-old") is None and not old_file.exists()
    assert await store.get("call-new") is not None and await store.recording("call-new") is not None
    assert await store.purge_older_than(30) == []


async def test_the_history_survives_a_restart(database_url: str, tmp_path: Path) -> None:
    first = CallStore(database_url, LocalRecordingStorage(tmp_path))
    await first.open()
    await first.save(a_call("call-1"))
    await first.close()
    second = CallStore(database_url, LocalRecordingStorage(tmp_path))
    await second.open()  # migrating an up-to-date schema is a no-op
    try:
        assert (await second.get("call-1")) == a_call("call-1")
    finally:
        await second.close()


WRITER = textwrap.dedent(
    """
    import asyncio, datetime as dt, sys
    from switchboard.records.models import StoredCall
    from switchboard.records.storage import LocalRecordingStorage
    from switchboard.records.store import CallStore

    async def main(url, root, writer):
        store = CallStore(url, LocalRecordingStorage(root))
        await store.open()
        now = dt.datetime.now(dt.UTC)
        async def one(i):
            call = StoredCall(call_id=f"call-{writer}-{i}", agent="a", ingress="twilio", started_at=now, outcome="completed")
            await store.save(call)
            await store.save(call)  # a retried save
        await asyncio.gather(*(one(i) for i in range(25)))
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
    """
)


def test_many_processes_migrate_and_write_the_same_database_at_once(
    database_url: str, tmp_path: Path
) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, database_url, str(tmp_path), str(w)],
            stderr=subprocess.PIPE,
        )
        for w in range(4)
    ]
    for process in writers:
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()

    async def read() -> CallPage:
        store = CallStore(database_url, LocalRecordingStorage(tmp_path))
        await store.open()
        try:
            return await store.list(CallQuery(limit=500))
        finally:
            await store.close()

    page = asyncio.run(read())
    assert page.total == 100
    assert {c.call_id for c in page.calls} == {f"call-{w}-{i}" for w in range(4) for i in range(25)}


async def test_postgres_is_really_postgres(postgres) -> None:
    store = CallStore(postgres.new_database(), LocalRecordingStorage("/nonexistent"))
    await store.open()
    try:
        assert store.dialect == "postgresql"
    finally:
        await store.close()
