"""The worker's archive: retention runs by itself, and a history database that is down never
fails a call (the failure is logged and counted)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from prometheus_client import REGISTRY

from conftest import free_port
from switchboard.agent.config import AgentConfig
from switchboard.call.record import CallRecord
from switchboard.call_log import CallLog, Resumed
from switchboard.records.archive import CallArchive, save_call
from switchboard.records.capture import CallCapture
from switchboard.records.models import RecordingRef, StoredCall
from switchboard.records.storage import LocalRecordingStorage
from switchboard.records.store import CallStore
from switchboard.settings import Settings

AGENT = AgentConfig(name="receptionist", greeting="Hello.", fallback="Sorry?")


def saved(result: str) -> float:
    return REGISTRY.get_sample_value("call_records_saved_total", {"result": result}) or 0.0


async def eventually(condition, limit_secs: float = 10.0) -> None:
    deadline = time.monotonic() + limit_secs
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_retention_deletes_expired_calls_and_audio_while_the_worker_runs(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    seed = CallStore(url, LocalRecordingStorage(tmp_path / "rec"))
    await seed.open()
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    ref = RecordingRef(key="old/call-old.flac", sample_rate=16000, duration_secs=1, bytes=4)
    await seed.save(
        StoredCall(
            call_id="call-old",
            agent="a",
            ingress="twilio",
            started_at=old,
            outcome="completed",
            recording=ref,
        ),
        b"fLaC",
    )
    await seed.save(
        StoredCall(
            call_id="call-new",
            agent="a",
            ingress="twilio",
            started_at=dt.datetime.now(dt.UTC),
            outcome="completed",
        )
    )
    await seed.close()
    assert (tmp_path / "rec" / "old" / "call-old.flac").exists()

    settings = Settings(
        database_url=url,
        recordings_url=str(tmp_path / "rec"),
        records_retention_days=7,
        records_purge_interval_secs=0.1,
    )
    archive = CallArchive(settings, AGENT)
    await archive.start()
    try:

        async def purged() -> bool:
            return await archive.store.get("call-old") is None

        await eventually(purged)
        assert not (tmp_path / "rec" / "old" / "call-old.flac").exists()
        assert await archive.store.get("call-new") is not None
    finally:
        await archive.stop()


async def test_a_history_database_that_is_down_is_counted_and_never_fails_the_call(
    tmp_path: Path,
) -> None:
    dead = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none?connect_timeout=1"
    archive = CallArchive(Settings(database_url=dead, recordings_url=str(tmp_path)), AGENT)
    await archive.start()  # logs the outage instead of raising
    before = saved("failed")

    class Finished:
        call_id, call_sid, stream_sid, outcome = "call-x", "CAx", "MZx", "completed"
        started_at, ended_at = time.time() - 5, time.time()
        failure_reason = None
        log = CallLog()

    started = time.monotonic()
    await save_call(archive, Finished(), CallCapture(agent="receptionist", ingress="twilio"))
    assert time.monotonic() - started < 0.05  # handed off, not written inline
    await archive.flush()
    assert saved("failed") == before + 1
    await archive.stop()


async def test_a_malformed_record_is_counted_not_raised(tmp_path: Path) -> None:
    archive = CallArchive(
        Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", recordings_url=str(tmp_path)),
        AGENT,
    )

    class Broken:
        call_id, call_sid, stream_sid, outcome = "call-y", "CAy", "MZy", None  # no outcome: invalid
        started_at, ended_at = time.time(), time.time()
        failure_reason = None
        log = CallLog()

    before = saved("failed")
    await save_call(archive, Broken(), CallCapture(agent="receptionist", ingress="twilio"))
    assert saved("failed") == before + 1
    await save_call(None, Broken(), None)  # no archive (tests, tools): nothing to do
    await archive.stop()


async def test_a_worker_saving_another_stream_of_a_stored_call_is_refused_unless_it_carried_it_on(
    tmp_path: Path,
) -> None:
    archive = CallArchive(
        Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", recordings_url=str(tmp_path)),
        AGENT,
    )
    await archive.start()

    def finished(stream_sid: str, outcome: str, resumed: bool) -> CallRecord:
        record = CallRecord(
            call_sid="CAz", stream_sid=stream_sid, call_id="call-z", started_at=time.time() - 5
        )
        record.outcome, record.ended_at = outcome, time.time()
        if resumed:  # the runner logs it when it carried on what another stream left behind
            record.log.add(Resumed())
        return record

    def capture() -> CallCapture:
        return CallCapture(agent="receptionist", ingress="twilio", from_number="+15550001111")

    try:
        before = {r: saved(r) for r in ("saved", "refused", "merged")}
        await save_call(archive, finished("MZ1", "handed_off", False), capture())
        await archive.flush()
        # A stream the worker did not carry on from the first (no session picked up): refused.
        await save_call(archive, finished("MZ2", "failed", False), CallCapture(agent="x", ingress="twilio"))
        await archive.flush()
        stored = await archive.store.get("call-z")
        assert stored is not None and stored.outcome == "handed_off" and stored.from_number == "+15550001111"
        # The stream placed by /twilio/resume, which picked the conversation up: merged.
        await save_call(archive, finished("MZ3", "completed", True), capture())
        await archive.flush()
        stored = await archive.store.get("call-z")
        assert stored is not None and stored.outcome == "completed" and stored.resumed
        after = {r: saved(r) for r in before}
        assert {r: after[r] - before[r] for r in before} == {"saved": 1, "refused": 1, "merged": 1}
    finally:
        await archive.stop()
