"""The call log and its views, in-process: call control appends typed events (each key press
once), and the worker's record, the Redis session and the stored record (real SQLite) are
projections of it, so a transfer's outcome, a tool call and who ended the call reach the
database, even when the transfer's result arrives after the call was saved."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection
from sqlalchemy import text

from switchboard.agent.config import load_agent_config
from switchboard.call.conversation.call_control import CallController
from switchboard.call.record import CallRecord
from switchboard.call_log import (
    EVENTS,
    CallLog,
    DigitsCollected,
    HangUp,
    IntentMatched,
    KeypadPress,
    Resumed,
    ToolCall,
    TransferRequested,
    TransferResult,
    Turn,
)
from switchboard.dispatch.sessions import CallSession
from switchboard.records.archive import CallArchive, save_call, stored_call, webhook_payload
from switchboard.records.capture import CallCapture
from switchboard.records.store import MIGRATIONS, CallStore, create_db_engine
from switchboard.settings import Settings
from switchboard.telephony.base import CallControl, TransferOutcome

AGENT = load_agent_config(Path(__file__).parent / "agents" / "numbers" / "call_control.yaml")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeWorker:
    """What call control asks of a pipeline worker: frames to say, and stopping."""

    def __init__(self) -> None:
        self.frames: list = []
        self.stop = asyncio.Event()

    async def queue_frames(self, frames) -> None:
        self.frames.extend(frames)

    async def queue_frame(self, frame) -> None:
        self.frames.append(frame)

    async def stop_when_done(self) -> None:
        self.stop.set()


class ColdTransfers(CallControl):
    def __init__(self) -> None:
        self.targets: list[str] = []

    async def transfer(self, target: str) -> TransferOutcome:
        self.targets.append(target)
        return TransferOutcome.INITIATED


@pytest.fixture
async def controller():
    clock = Clock()
    control = CallController(
        FakeWorker(), AGENT, ColdTransfers(), call_id="call-1", log=CallLog(clock), clock=clock
    )
    control.clock = clock  # type: ignore[attr-defined]
    yield control
    await control.stop()


async def test_each_key_press_is_logged_once_menu_keys_alone_and_collected_keys_as_their_string(
    controller: CallController,
) -> None:
    controller.clock.now += 1.5  # type: ignore[attr-defined]
    await controller.keypad.key("7")  # not on the menu
    await controller.keypad.key("2")  # account: collects digits
    for key in "4521#":
        await controller.keypad.key(key)
    events = controller.log.events
    assert [type(e) for e in events] == [KeypadPress, KeypadPress, DigitsCollected]
    assert (events[0].digit, events[0].intent, events[0].at_s) == ("7", None, 1.5)
    assert (events[1].digit, events[1].intent) == ("2", "account")
    assert (events[2].digits, events[2].timed_out) == ("4521", False)


async def spoken(controller: CallController) -> None:
    """The agent's line was heard: what call control waits for before a follow-up."""
    for frame in (BotStartedSpeakingFrame(), BotStoppedSpeakingFrame()):
        await controller.on_push_frame(
            FramePushed(None, None, frame, FrameDirection.DOWNSTREAM, 0)  # type: ignore[arg-type]
        )


async def test_a_cold_transfer_is_logged_with_its_request_and_ends_the_call_as_a_transfer(
    controller: CallController,
) -> None:
    await controller.keypad.key("0")  # front desk: a cold transfer after the reply
    await spoken(controller)
    await asyncio.wait_for(controller.worker.stop.wait(), timeout=2)  # type: ignore[attr-defined]
    assert controller.control.targets == ["+15005550200"]  # type: ignore[attr-defined]
    assert controller.ended_by == "transfer"
    press, requested = controller.log.events
    assert press == KeypadPress(digit="0", intent="front_desk")
    assert requested == TransferRequested(
        intent="front_desk", target="+15005550200", mode="cold", outcome="initiated"
    )


def a_finished_call() -> CallRecord:
    """A call whose log has one of everything the stored record shows."""
    record = CallRecord(call_sid="CA1", stream_sid="MZ1", call_id="call-1", ingress="twilio")
    log = record.log
    log.add(IntentMatched(intent="front_desk"))
    log.add(Turn(transcript="front desk please", bot_started_ms=640.0))
    log.add(KeypadPress(digit="1", intent="cards"))
    log.add(ToolCall(tool="lookup", arguments={"patient": "42"}, ok=True, result={"day": "Tuesday"}))
    log.add(TransferRequested(intent="front_desk", target="+15005550200", mode="cold", outcome="initiated"))
    log.add(HangUp(ended_by="transfer"))
    record.outcome, record.ended_at = "completed", time.time()
    return record


def test_the_worker_record_is_a_view_of_the_log_in_its_established_shape() -> None:
    record = a_finished_call()
    view = record.view()
    assert [e["event"] for e in view["events"]] == ["keypad", "tool_call", "transfer"]
    assert view["ended_by"] == "transfer" and view["intents"] == ["front_desk"]
    assert view["transfer"] == {
        "intent": "front_desk", "target": "+15005550200", "mode": "cold", "outcome": "initiated"
    }
    assert view["turns"] == [{**view["turns"][0], "bot_started_ms": 640.0}]
    assert "event" not in view["turns"][0]
    record.log.add(TransferResult(outcome="answered", dial_status="completed"))
    assert record.view()["transfer"]["outcome"] == "answered"
    json.dumps(record.view())  # served as JSON by GET /calls


def test_a_resumed_call_carries_the_sessions_events_and_skips_what_it_cannot_read() -> None:
    before = a_finished_call().log
    session = CallSession(call_id="call-1", agent="a", events=before.control_events())
    session = CallSession.model_validate_json(session.model_dump_json())  # through Redis
    log = CallLog()
    log.carry_on([*session.events, {"event": "from_a_newer_worker"}])
    log.add(Resumed())
    assert [e.event for e in log.events] == ["keypad", "tool_call", "transfer", "resumed"]
    assert log.transfer() == before.transfer()


@pytest.fixture
async def store(tmp_path: Path):
    store = CallStore(f"sqlite:///{tmp_path}/db.sqlite", _NoRecordings())
    await store.open()
    yield store
    await store.close()


class _NoRecordings:
    def put(self, key, data):  # pragma: no cover - these calls have no audio
        raise AssertionError("no recording expected")


async def test_the_stored_record_shows_the_transfer_the_tool_call_and_who_ended_the_call(
    store: CallStore,
) -> None:
    call = stored_call(a_finished_call(), CallCapture(agent="a", ingress="twilio"))
    await store.save(call)
    saved = await store.get("call-1")
    assert saved is not None and saved == call
    assert saved.ended_by == "transfer"
    assert saved.transfer is not None and saved.transfer.target == "+15005550200"
    assert [(t.tool, t.arguments, t.result) for t in saved.tool_calls] == [
        ("lookup", {"patient": "42"}, {"day": "Tuesday"})
    ]
    assert [e.event for e in saved.events] == [
        "intent", "keypad", "tool_call", "transfer", "hang_up"
    ]
    assert saved.turns[0].bot_started_ms == 640.0
    body = json.loads(webhook_payload(saved))
    assert body["call"]["ended_by"] == "transfer" and body["call"]["tool_calls"][0]["ok"]


async def test_a_cold_transfers_result_after_the_save_amends_the_stored_record(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    archive = CallArchive(Settings(database_url=url, recordings_url=str(tmp_path)), AGENT)
    await archive.start()
    try:
        record = a_finished_call()
        await save_call(archive, record, CallCapture(agent="a", ingress="twilio"))
        await archive.flush()
        assert (await archive.store.get("call-1")).transfer.outcome == "initiated"
        # Twilio's <Dial action> report, minutes later:
        record.log.add(TransferResult(outcome="no_answer", dial_status="no-answer"))
        assert archive.amend("call-1", record.log) is not None
        await archive.flush()
        saved = await archive.store.get("call-1")
        assert saved.transfer.outcome == "no_answer" and saved.transfer.dial_status == "no-answer"
        assert saved.events[-1].event == "transfer_result"
        assert archive.amend("call-never-saved", record.log) is None
    finally:
        await archive.stop()


def test_records_stored_before_the_call_log_are_migrated_to_its_events(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path}/old.sqlite")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(
            text(
                "INSERT INTO calls (call_id, agent, ingress, started_at, outcome, transcript, turns,"
                " events, intents, tool_calls, provider_fallbacks, saved_at) VALUES ('old', 'a',"
                " 'twilio', '2026-01-01 00:00:00', 'completed', '[]', '[{\"transcript\": \"hi\"}]',"
                " :events, '[]', '[]', '[]', '2026-01-01 00:00:00')"
            ),
            {
                "events": json.dumps(
                    [{"type": "keypad", "t": 3.5, "data": {"digit": "5"}}, {"type": "interrupted", "t": 4.0}]
                )
            },
        )
        command.upgrade(config, "head")
        events = json.loads(connection.execute(text("SELECT events FROM calls")).scalar_one())
    engine.dispose()
    parsed = [EVENTS.validate_python(e) for e in events]
    assert parsed[0] == KeypadPress(at_s=3.5, digit="5") and parsed[1].event == "interrupted"


async def test_twilios_dial_report_reaches_the_stored_record_of_a_call_saved_before_it(
    tmp_path: Path,
) -> None:
    from switchboard.worker.app import WorkerParts

    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", recordings_url=str(tmp_path))
    parts = WorkerParts.build(settings, AGENT, None, ())
    await parts.archive.start()
    try:
        record = a_finished_call()
        parts.calls.add(record)
        await save_call(parts.archive, record, CallCapture(agent="a", ingress="twilio"))
        await parts.archive.flush()
        parts.transfer_result("CA1", TransferOutcome.ANSWERED, {"DialCallStatus": "completed"})
        await parts.archive.flush()
        saved = await parts.archive.store.get("call-1")
        assert saved is not None and saved.transfer is not None
        assert (saved.transfer.outcome, saved.transfer.dial_status) == ("answered", "completed")
        assert record.view()["transfer"]["outcome"] == "answered"
    finally:
        await parts.archive.stop()


async def test_a_resumed_calls_merged_record_lists_each_event_once_and_keeps_the_transfer(
    store: CallStore,
) -> None:
    first = a_finished_call()  # stream MZ1: a keypress, a tool call, a cold transfer
    later = CallRecord(call_sid="CA1", stream_sid="MZ2", call_id="call-1", ingress="twilio")
    later.log.carry_on(first.log.control_events())  # from the session in Redis
    later.log.add(Resumed())
    later.log.add(KeypadPress(digit="9", intent="goodbye"))
    later.log.add(HangUp(ended_by="agent"))
    later.outcome, later.ended_at = "completed", time.time()
    capture = CallCapture(agent="a", ingress="twilio")
    assert await store.save(stored_call(first, capture)) == "saved"
    assert await store.save(stored_call(later, capture)) == "merged"
    merged = await store.get("call-1")
    assert merged is not None and merged.resumed and merged.ended_by == "agent"
    assert [e.event for e in merged.events] == [
        "intent", "keypad", "tool_call", "transfer", "hang_up",  # the first stream's
        "resumed", "keypad", "hang_up",  # the later stream's own
    ]
    assert len(merged.tool_calls) == 1
    assert merged.transfer is not None and merged.transfer.target == "+15005550200"
