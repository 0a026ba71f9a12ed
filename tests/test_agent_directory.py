"""An agent per number: the directory picks the agent, reloads edits and refuses bad files."""

import os
from pathlib import Path

import pytest

from conftest import TEST_AGENT
from switchboard.agent.config import load_agent_config
from switchboard.agent.directory import AgentDirectory
from switchboard.errors import ConfigError
from switchboard.observability import metrics

BILLING = """version: 1
name: {name}
numbers: ["+15550001111"{more}]
greeting: Billing desk.
fallback: Sorry?
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, bump: float = 0.0) -> None:
    path.write_text(text)
    if bump:  # a distinct mtime even on coarse-grained filesystems
        stat = path.stat()
        os.utime(path, (stat.st_atime, stat.st_mtime + bump))


@pytest.fixture
def default():
    return load_agent_config(TEST_AGENT)


def test_the_dialed_number_picks_the_agent_and_unknown_numbers_get_the_default(
    tmp_path: Path, default
) -> None:
    write(tmp_path / "billing.yaml", BILLING.format(name="Billing", more=', "+15550002222"'))
    agents = AgentDirectory(default, tmp_path)
    assert agents.for_number("+15550001111").name == "Billing"
    assert agents.for_number("+15550002222").name == "Billing"
    assert agents.for_number("+15559999999") is default
    assert agents.for_number("") is default and agents.for_number(None) is default
    assert [a.name for a in agents.agents()] == [default.name, "Billing"]


def test_an_edited_file_is_reloaded_without_a_restart(tmp_path: Path, default) -> None:
    clock = Clock()
    path = tmp_path / "billing.yaml"
    write(path, BILLING.format(name="Billing", more=""))
    agents = AgentDirectory(default, tmp_path, reload_secs=2.0, clock=clock)
    write(path, BILLING.format(name="Billing v2", more=""), bump=5)
    assert agents.for_number("+15550001111").name == "Billing"  # not checked again yet
    clock.now = 2.5
    assert agents.for_number("+15550001111").name == "Billing v2"
    write(
        tmp_path / "sales.yaml",
        BILLING.format(name="Sales", more="").replace("+15550001111", "+15550003333"),
    )
    clock.now = 5.0
    assert agents.for_number("+15550003333").name == "Sales"
    (tmp_path / "sales.yaml").unlink()
    clock.now = 7.5
    assert agents.for_number("+15550003333") is default


def test_a_bad_edit_is_refused_naming_the_field_and_the_previous_version_keeps_serving(
    tmp_path: Path, default
) -> None:
    clock = Clock()
    path = tmp_path / "billing.yaml"
    write(path, BILLING.format(name="Billing", more=""))
    agents = AgentDirectory(default, tmp_path, clock=clock)
    before = metrics.AGENT_CONFIG_ERRORS._value.get()
    write(
        path,
        BILLING.format(name="Billing", more="") + "silence: {reprompt_after_secs: -1}\n",
        bump=5,
    )
    clock.now = 10
    assert agents.for_number("+15550001111").name == "Billing"
    assert "silence.reprompt_after_secs" in agents.errors["billing.yaml"]
    assert metrics.AGENT_CONFIG_ERRORS._value.get() == before + 1
    clock.now = 20  # unchanged bad file: not re-read, not counted again
    agents.for_number("+15550001111")
    assert metrics.AGENT_CONFIG_ERRORS._value.get() == before + 1
    write(path, BILLING.format(name="Billing fixed", more=""), bump=10)
    clock.now = 30
    assert agents.for_number("+15550001111").name == "Billing fixed"
    assert agents.errors == {}


def test_a_bad_file_at_start_is_refused_and_the_others_serve(tmp_path: Path, default) -> None:
    write(tmp_path / "billing.yaml", BILLING.format(name="Billing", more=""))
    write(tmp_path / "broken.yaml", "name: x\ngreeting: hi\nfallback: f\nnumbers: ['555-1234']\n")
    write(
        tmp_path / "keypad.yaml",
        "name: k\ngreeting: hi\nfallback: f\nkeypad: {options: {'1': nope}}\n",
    )
    agents = AgentDirectory(default, tmp_path)
    assert agents.for_number("+15550001111").name == "Billing"
    assert "numbers" in agents.errors["broken.yaml"] and "E.164" in agents.errors["broken.yaml"]
    assert (
        "keypad.options" in agents.errors["keypad.yaml"]
        or "unknown intents" in agents.errors["keypad.yaml"]
    )


def test_two_files_claiming_one_number_are_refused_for_the_later(tmp_path: Path, default) -> None:
    write(tmp_path / "a.yaml", BILLING.format(name="A", more=""))
    write(tmp_path / "b.yaml", BILLING.format(name="B", more=""))
    agents = AgentDirectory(default, tmp_path)
    assert agents.for_number("+15550001111").name == "A"
    assert "+15550001111 already answered by a.yaml" in agents.errors["b.yaml"]


def test_a_missing_directory_is_a_clear_error(tmp_path: Path, default) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        AgentDirectory(default, tmp_path / "nope")
