"""The post-call LLM analysis against the LLM emulator on loopback, and the schema migration
that added it, applied to a database that already holds calls."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from alembic import command
from alembic.config import Config
from prometheus_client import REGISTRY

from conftest import Server, _start, free_port
from switchboard.agent.config import AgentConfig
from switchboard.records.analysis import analyse_call, parse_verdict
from switchboard.records.archive import CallArchive
from switchboard.records.capture import CallCapture
from switchboard.records.models import StoredCall, TranscriptEntry
from switchboard.records.storage import LocalRecordingStorage
from switchboard.records.store import MIGRATIONS, CallStore, create_db_engine
from switchboard.settings import Settings

VERDICT = '{"summary": "The caller asked when the practice opens.", "success": true, "reasons": "The hours were given."}'
RULES = [
    {"match": "no json please", "reply": "I would rather not say."},
    {"match": "Transcript of the call", "reply": f"Here is my review: {VERDICT}"},
]
AGENT = AgentConfig.model_validate(
    {
        "name": "receptionist",
        "greeting": "Hello.",
        "fallback": "Sorry?",
        "analysis": {"success_criteria": ["the caller learnt the opening hours"]},
    }
)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    rules = tmp_path_factory.mktemp("llm") / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES))
    port = free_port()
    server = _start(
        [
            sys.executable,
            "-m",
            "switchboard.cli",
            "emulate",
            "llm",
            "--port",
            str(port),
            "--rules",
            str(rules),
            "--set",
            "ttft_ms=50",
        ],
        "llm-emulator",
        "/health",
        port,
        None,
    )
    yield server
    server.stop()


def settings_for(llm: Server, tmp_path: Path) -> Settings:
    return Settings(
        responder="openai",
        openai_api_key="sk-test",
        llm_base_url=f"{llm.base_url}/v1",
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        recordings_url=str(tmp_path / "rec"),
    )


def a_call(said: str) -> StoredCall:
    return StoredCall(
        call_id="call-analysed",
        agent="receptionist",
        ingress="twilio",
        started_at=dt.datetime.now(dt.UTC),
        outcome="completed",
        transcript=[
            TranscriptEntry(role="agent", text="Hello.", t=0),
            TranscriptEntry(role="user", text=said, t=2),
        ],
    )


def count(result: str) -> float:
    return REGISTRY.get_sample_value("call_analyses_total", {"result": result}) or 0.0


async def test_the_llm_summarises_the_call_and_judges_it_against_the_criteria(
    llm: Server, tmp_path: Path
) -> None:
    analysis = await analyse_call(settings_for(llm, tmp_path), AGENT, a_call("When do you open?"))
    assert analysis is not None
    assert analysis.summary == "The caller asked when the practice opens."
    assert (
        analysis.success is True
        and analysis.reasons == "The hours were given."
        and analysis.model == "gpt-4o-mini"
    )


async def test_a_reply_without_json_leaves_the_record_without_analysis_and_is_counted(
    llm: Server, tmp_path: Path
) -> None:
    before = count("failed")
    assert await analyse_call(settings_for(llm, tmp_path), AGENT, a_call("no json please")) is None
    assert count("failed") == before + 1


async def test_without_an_llm_or_without_the_option_there_is_no_analysis(tmp_path: Path) -> None:
    before = count("skipped")
    assert await analyse_call(Settings(), AGENT, a_call("hi")) is None  # the scripted responder
    assert count("skipped") == before + 1
    plain = AgentConfig(name="a", greeting="Hello.", fallback="Sorry?")
    assert (
        await analyse_call(Settings(responder="openai", openai_api_key="sk-x"), plain, a_call("hi"))
        is None
    )


def test_the_verdict_is_found_inside_prose_or_a_code_fence() -> None:
    fenced = f"```json\n{VERDICT}\n```"
    assert parse_verdict(fenced, "m").success is True
    with pytest.raises(ValueError):
        parse_verdict("no verdict here", "m")


async def test_the_archive_saves_the_analysis_with_the_record(llm: Server, tmp_path: Path) -> None:
    archive = CallArchive(settings_for(llm, tmp_path), AGENT)
    await archive.start()
    try:
        archive.submit(
            a_call("When do you open?"), CallCapture(agent="receptionist", ingress="twilio")
        )
        await archive.flush()
        saved = await archive.store.get("call-analysed")
        assert saved is not None and saved.analysis is not None and saved.analysis.success is True
    finally:
        await archive.stop()


async def test_upgrading_a_database_that_holds_calls_keeps_them(
    database_url: str, tmp_path: Path
) -> None:
    engine = create_db_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO calls (call_id, agent, ingress, started_at, outcome, transcript, turns, events,"
                " intents, tool_calls, provider_fallbacks, saved_at) VALUES ('call-before', 'a', 'twilio',"
                " :t, 'completed', '[]', '[]', '[]', '[]', '[]', '[]', :t)"
            ),
            {"t": dt.datetime(2026, 11, 30, 12, 0)},
        )
    engine.dispose()
    store = CallStore(database_url, LocalRecordingStorage(tmp_path))
    await store.open()
    try:
        before = await store.get("call-before")
        assert before is not None and before.analysis is None and before.outcome == "completed"
        await store.save(a_call("hi").model_copy(update={"analysis": parse_verdict(VERDICT, "m")}))
        after = await store.get("call-analysed")
        assert after is not None and after.analysis is not None and after.analysis.summary
    finally:
        await store.close()
