"""Agent configs are bounded (every field, the counts, the file) and the loader's every failure
is one line naming the file and the field: for the CLI, for an agents dir and for /health."""

from __future__ import annotations

import copy
import os
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from switchboard.agent import config as limits
from switchboard.agent.config import load_agent_config
from switchboard.agent.directory import AgentDirectory
from switchboard.errors import ConfigError
from switchboard.settings import Settings

BASE: dict[str, Any] = {
    "version": 1,
    "name": "Limits",
    "greeting": "Hello.",
    "fallback": "Sorry?",
    "numbers": ["+15550001111"],
    "recording": {"enabled": True, "disclosure": "This call may be recorded."},
    "keypad": {"options": {"1": "hours"}},
    "tools": [{"name": "lookup", "description": "Look it up.", "url": "http://127.0.0.1:9/x"}],
    "analysis": {"success_criteria": ["booked"]},
    "intents": [
        {"name": "hours", "phrases": ["hours"], "reply": "Nine to five."},
        {"name": "account", "phrases": ["account"], "reply": "Your number?",
         "collect_digits": {"reply": "I have {digits}."}},
        {"name": "balance", "phrases": ["balance"], "reply": "Checking.", "tool": "lookup",
         "answer": "You owe {amount}."},
        {"name": "desk", "phrases": ["desk"], "reply": "Putting you through.",
         "transfer": "+15555550100", "transfer_mode": "warm"},
    ],
}  # fmt: skip


def write(tmp_path: Path, document: Any, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def with_value(dotted: str, value: Any) -> dict[str, Any]:
    """BASE with the field at ``dotted`` (``intents.1.collect_digits.reply``) set to ``value``."""
    document = copy.deepcopy(BASE)
    *parents, last = dotted.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[int(last) if isinstance(node, list) else last] = value
    return document


def speech(chars: int) -> str:
    """``chars`` characters of short sentences."""
    return ("Thanks for calling. " * (chars // 20 + 1))[:chars]


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(path)
    message = str(excinfo.value)
    assert "\n" not in message and path.name in message
    return message


def test_the_base_config_loads(tmp_path: Path) -> None:
    assert load_agent_config(write(tmp_path, BASE)).name == "Limits"


SPOKEN = [
    "greeting", "fallback", "resumed", "transfer_failed", "transfer_unanswered",
    "silence.reprompt", "silence.goodbye", "limits.closing", "keypad.invalid",
    "recording.disclosure", "intents.0.reply", "intents.3.transfer_summary",
    "intents.1.collect_digits.reply", "intents.1.collect_digits.no_input", "intents.2.answer",
    "tools.0.filler", "tools.0.failure",
]  # fmt: skip


@pytest.mark.parametrize("field", SPOKEN)
def test_every_spoken_line_is_capped_naming_the_field(tmp_path: Path, field: str) -> None:
    at_limit = speech(limits.MAX_SPOKEN_CHARS)
    if field.endswith("collect_digits.reply"):
        at_limit = "{digits}" + at_limit[8:]
    load_agent_config(write(tmp_path, with_value(field, at_limit)))
    message = refusal(write(tmp_path, with_value(field, at_limit + "a")))
    assert f"{field}: String should have at most {limits.MAX_SPOKEN_CHARS} characters" in message


@pytest.mark.parametrize("field", ["greeting", "intents.0.reply", "silence.goodbye"])
def test_a_spoken_sentence_is_capped_naming_the_field(tmp_path: Path, field: str) -> None:
    # Piper's memory grows with one sentence's length (about 2 MB a character), not the line's.
    longest = "Hello. " + "a" * limits.MAX_SENTENCE_CHARS
    load_agent_config(write(tmp_path, with_value(field, longest)))
    message = refusal(write(tmp_path, with_value(field, longest + "a")))
    assert f"{field}: Value error, has a sentence of {limits.MAX_SENTENCE_CHARS + 1} characters" in message


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("system_prompt", limits.MAX_PROMPT_CHARS),
        ("name", limits.MAX_NAME_CHARS),
        ("intents.0.phrases.0", limits.MAX_PHRASE_CHARS),
        ("intents.0.name", limits.MAX_IDENTIFIER_CHARS),
        ("tools.0.description", limits.MAX_TOOL_DESCRIPTION_CHARS),
        ("analysis.success_criteria.0", limits.MAX_CRITERION_CHARS),
        ("intents.3.transfer", limits.MAX_TRANSFER_TARGET_CHARS),
    ],
)
def test_other_text_fields_are_capped_naming_the_field(tmp_path: Path, field: str, limit: int) -> None:
    message = refusal(write(tmp_path, with_value(field, "a" * (limit + 1))))
    assert f"{field}: String should have at most {limit} characters" in message


@pytest.mark.parametrize(
    ("field", "items", "limit"),
    [
        ("intents", [{"name": f"i{n}", "phrases": [f"p{n}"], "reply": "r"} for n in range(limits.MAX_INTENTS + 1)],
         limits.MAX_INTENTS),
        ("intents.0.phrases", [f"p{n}" for n in range(limits.MAX_PHRASES_PER_INTENT + 1)],
         limits.MAX_PHRASES_PER_INTENT),
        ("tools", [{"name": f"t{n}", "description": "d", "url": "http://127.0.0.1:9/"} for n in range(limits.MAX_TOOLS + 1)],
         limits.MAX_TOOLS),
        ("numbers", [f"+1555{n:07d}" for n in range(limits.MAX_NUMBERS + 1)], limits.MAX_NUMBERS),
        ("livekit_rooms", [f"call-{n}-*" for n in range(limits.MAX_LIVEKIT_CLAIMS + 1)], limits.MAX_LIVEKIT_CLAIMS),
        ("analysis.success_criteria", ["c"] * (limits.MAX_SUCCESS_CRITERIA + 1), limits.MAX_SUCCESS_CRITERIA),
    ],
)  # fmt: skip
def test_lists_are_capped_naming_the_field(tmp_path: Path, field: str, items: list, limit: int) -> None:
    message = refusal(write(tmp_path, with_value(field, items)))
    assert f"{field}: List should have at most {limit} items" in message


def test_a_tools_parameter_schema_and_arguments_are_capped(tmp_path: Path) -> None:
    big = {"type": "object", "properties": {f"p{n}": {"type": "string", "description": "x" * 100} for n in range(200)}}
    message = refusal(write(tmp_path, with_value("tools.0.parameters", big)))
    assert f"tools.0.parameters: Value error, the schema is over {limits.MAX_TOOL_SCHEMA_CHARS}" in message
    arguments = {f"a{n}": "v" for n in range(limits.MAX_TOOL_ARGUMENTS + 1)}
    message = refusal(write(tmp_path, with_value("intents.2.arguments", arguments)))
    assert "intents.2.arguments: Dictionary should have at most" in message


def test_a_yaml_alias_bomb_in_a_tool_schema_is_refused_without_expanding_it(tmp_path: Path) -> None:
    # Nine levels of nine aliases: 9**9 (387 million) strings if anything walked it in full.
    levels = ['a0: &a0 ["xxxxxxxxxx"]']
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
    body = yaml.safe_dump(BASE, sort_keys=False).replace(
        "url: http://127.0.0.1:9/x", "url: http://127.0.0.1:9/x\n  parameters: {type: object, properties: {p: *a9}}"
    )
    path = tmp_path / "agent.yaml"
    path.write_text("\n".join(["x-bomb:", *(f"  {line}" for line in levels)]) + "\n" + body)
    message = refusal(path)
    assert "tools.0.parameters" in message and "x-bomb: Extra inputs are not permitted" in message
    # Its traceback prints too: the ValidationError (whose text would expand the bomb) is not chained.
    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(path)
    assert "x-bomb" in "".join(traceback.format_exception(excinfo.value))


def test_the_fixed_lines_together_are_capped(tmp_path: Path) -> None:
    reply = speech(limits.MAX_SPOKEN_CHARS)
    intents = [{"name": f"i{n}", "phrases": [f"p{n}"], "reply": reply} for n in range(limits.MAX_FIXED_SPEECH_CHARS // len(reply) + 1)]
    message = refusal(write(tmp_path, {**BASE, "keypad": None, "intents": intents, "tools": []}))
    assert f"over the {limits.MAX_FIXED_SPEECH_CHARS} a worker synthesises at start-up" in message


def test_a_10_mb_greeting_is_refused_by_the_files_size_before_parsing(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    path.write_text(path.read_text().replace("greeting: Hello.", "greeting: " + "Welcome! " * (10 * 1024 * 1024 // 9)))
    assert path.stat().st_size > 10_000_000
    message = refusal(path)
    assert f"file is over {limits.MAX_AGENT_CONFIG_BYTES // 1024} KiB" in message


@pytest.mark.parametrize(
    ("template", "field"),
    [("I have {digits:>999999999}.", "intents.1.collect_digits.reply"), ("You owe {amount!r:>999999999}.", "intents.2.answer"),
     ("You owe {amount.__class__}.", "intents.2.answer")],
)  # fmt: skip
def test_templates_take_plain_placeholders_only(tmp_path: Path, template: str, field: str) -> None:
    # A format spec in a template would build a huge string on every call that says it.
    message = refusal(write(tmp_path, with_value(field, template)))
    assert f"{field}: Value error, placeholders are plain {{name}}s" in message


def test_a_tool_answer_too_long_to_say_is_not_said() -> None:
    from switchboard.agent.tools import render_answer

    template = "Your next visit is {day}."
    assert render_answer(template, {"day": "Tuesday"}) == "Your next visit is Tuesday."
    # The tool's failure line is said instead of a sentence Piper would need gigabytes for.
    assert render_answer(template, {"day": "x" * limits.MAX_SENTENCE_CHARS}) is None
    assert render_answer(template, {"day": "Tuesday. " * limits.MAX_SPOKEN_CHARS}) is None


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.yaml", "file not found"),
        (lambda d: (d / "dir.yaml").mkdir() or d / "dir.yaml", "is a directory"),
        (lambda d: (d / "a.yaml").write_bytes(b"name: caf\xe9\ngreeting: hi\n") and d / "a.yaml",
         "not UTF-8 text (byte 0xe9 at offset 9)"),
        (lambda d: (d / "a.yaml").write_text("name: [unclosed\ngreeting: hi\n") and d / "a.yaml",
         "not valid YAML: line 2, column 9"),
        (lambda d: (d / "a.yaml").write_text("greeting: 2026-13-45\n") and d / "a.yaml", "not valid YAML: month must be"),
        (lambda d: (d / "a.yaml").write_text("greeting: " + "[" * 5000 + "]" * 5000) and d / "a.yaml",
         f"nested over {limits.MAX_NESTING} levels deep"),
        (lambda d: (d / "a.yaml").write_text("- a\n- list\n") and d / "a.yaml", "expected a mapping at the top level, not a list"),
        (lambda d: (d / "a.yaml").write_text("just words\n") and d / "a.yaml", "expected a mapping at the top level, not a str"),
        (lambda d: (d / "a.yaml").write_text("") or d / "a.yaml", "not an empty file"),
        (lambda d: os.mkfifo(d / "a.yaml") or d / "a.yaml", "not a regular file"),
    ],
    ids=["missing", "directory", "not-utf8", "yaml-syntax", "bad-date", "deep-nesting", "list", "scalar", "empty", "fifo"],
)  # fmt: skip
def test_every_unreadable_file_is_a_one_line_message(tmp_path: Path, make, expected: str) -> None:
    assert expected in refusal(make(tmp_path))


@pytest.mark.parametrize("command", ["serve", "worker", "up"])
@pytest.mark.parametrize("kind", ["directory", "not-utf8", "huge", "list"])
def test_the_cli_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, kind: str
) -> None:
    from switchboard.cli import main

    path = tmp_path / "agent.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b"\xff\xfe" + "greeting: hi\n".encode("utf-16-le"))
    elif kind == "huge":
        path.write_text("greeting: " + "a" * (limits.MAX_AGENT_CONFIG_BYTES + 1) + "\n")
    else:
        path.write_text("- a list\n")
    args = [command, "--agent", str(path), "--port", "1"]
    assert main([*args, "--data-dir", str(tmp_path / "var")] if command == "up" else args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"switchboard: agent config {path}: ") and err.count("\n") == 1
    assert "Traceback" not in err


def bad_files(directory: Path) -> None:
    (directory / "sub.yaml").mkdir()
    (directory / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (directory / "huge.yaml").write_text("greeting: " + "a" * (limits.MAX_AGENT_CONFIG_BYTES + 1))
    (directory / "list.yaml").write_text("- a\n")
    write(directory, with_value("greeting", speech(limits.MAX_SPOKEN_CHARS + 1)), "long.yaml")


def test_an_agents_dir_refuses_bad_files_and_serves_the_others(tmp_path: Path) -> None:
    default = load_agent_config(write(tmp_path, {**BASE, "numbers": []}, "default.yaml"))
    directory = tmp_path / "agents"
    directory.mkdir()
    write(directory, {**BASE, "name": "Billing"}, "billing.yaml")
    bad_files(directory)
    agents = AgentDirectory(default, directory)
    assert agents.for_number("+15550001111").name == "Billing"
    assert sorted(agents.errors) == ["huge.yaml", "latin1.yaml", "list.yaml", "long.yaml", "sub.yaml"]
    assert "is a directory" in agents.errors["sub.yaml"]
    assert "greeting: String should have at most" in agents.errors["long.yaml"]


async def test_a_workers_health_names_the_refused_files(tmp_path: Path) -> None:
    from switchboard.worker.app import create_worker_app

    directory = tmp_path / "agents"
    directory.mkdir()
    write(directory, {**BASE, "name": "Billing"}, "billing.yaml")
    bad_files(directory)
    default = load_agent_config(write(tmp_path, {**BASE, "numbers": []}, "default.yaml"))
    settings = Settings(agents_dir=directory, database_url=f"sqlite:///{tmp_path}/calls.db")
    app = create_worker_app(settings, default)  # its lifespan (loading models) is not needed here
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as http:
        health = (await http.get("/health")).json()
    assert health["agent_config_errors"] == ["huge.yaml", "latin1.yaml", "list.yaml", "long.yaml", "sub.yaml"]
