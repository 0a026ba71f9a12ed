"""An agent per number: the directory picks the agent, reloads edits and refuses bad files."""

import os
from pathlib import Path

import pytest

from conftest import TEST_AGENT
from switchboard.agent.config import load_agent_config
from switchboard.agent.directory import AgentDirectory, CallRoute
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


LIVEKIT = """version: 1
name: {name}
{claims}
greeting: Hello.
fallback: Sorry?
"""


def livekit_agent(path: Path, name: str, claims: str, bump: float = 0.0) -> None:
    write(path, LIVEKIT.format(name=name, claims=claims), bump=bump)


def test_livekit_calls_choose_by_number_then_trunk_then_room(tmp_path: Path, default) -> None:
    write(tmp_path / "billing.yaml", BILLING.format(name="Billing", more=""))
    livekit_agent(tmp_path / "support.yaml", "Support", "livekit_trunks: [ST_support, ST_backup]")
    livekit_agent(tmp_path / "sales.yaml", "Sales", "livekit_rooms: ['call-sales-*', 'call-vip?']")
    agents = AgentDirectory(default, tmp_path)
    choose = lambda **route: agents.choose(CallRoute(**route)).name  # noqa: E731
    assert choose(trunk="ST_backup") == "Support"
    assert choose(room="call-sales-42") == "Sales" and choose(room="call-vip7") == "Sales"
    assert choose(room="call-vip77") == default.name  # ? is one character
    assert choose(dialed="+15550001111", trunk="ST_support", room="call-sales-1") == "Billing"
    assert choose(trunk="ST_support", room="call-sales-1") == "Support"
    assert choose(agent="Sales", dialed="+15550001111") == "Sales"
    assert choose(agent="Nobody", trunk="ST_support") == "Support"
    assert choose(trunk="ST_unknown", room="call-other") == default.name
    # A Twilio call goes through the same choice.
    assert agents.for_call({"To": "+15550001111"}).name == "Billing"
    assert agents.for_call({"Agent": "Support", "To": "+15550001111"}).name == "Support"


@pytest.mark.parametrize(
    ("claims", "field", "says"),
    [
        ("livekit_trunks: [trunk-1]", "livekit_trunks", "ST_abc123"),
        ("livekit_rooms: ['lobby-*']", "livekit_rooms", "start with call-"),
        ("livekit_rooms: ['call-[ab]']", "livekit_rooms", "call-[ab]"),
    ],
    ids=["trunk", "room-prefix", "room-chars"],
)
def test_a_bad_livekit_claim_is_refused_naming_the_field_and_the_previous_version_serves(
    tmp_path: Path, default, claims: str, field: str, says: str
) -> None:
    clock = Clock()
    path = tmp_path / "support.yaml"
    livekit_agent(path, "Support", "livekit_trunks: [ST_support]\nlivekit_rooms: ['call-help-*']")
    agents = AgentDirectory(default, tmp_path, clock=clock)
    livekit_agent(path, "Support v2", claims, bump=5)
    clock.now = 10
    assert agents.choose(CallRoute(trunk="ST_support")).name == "Support"
    assert agents.choose(CallRoute(room="call-help-1")).name == "Support"
    error = agents.errors["support.yaml"]
    assert f"{field}: " in error and says in error


def test_two_files_claiming_one_trunk_or_room_pattern_are_refused_for_the_later(
    tmp_path: Path, default
) -> None:
    livekit_agent(tmp_path / "a.yaml", "A", "livekit_trunks: [ST_one]\nlivekit_rooms: ['call-a-*']")
    livekit_agent(tmp_path / "b.yaml", "B", "livekit_trunks: [ST_two, ST_one]")
    livekit_agent(tmp_path / "c.yaml", "C", "livekit_rooms: ['call-a-*']")
    agents = AgentDirectory(default, tmp_path)
    assert agents.choose(CallRoute(trunk="ST_one")).name == "A"
    assert agents.choose(CallRoute(trunk="ST_two")) is default  # b.yaml is refused whole
    assert "livekit_trunks: ST_one already answered by a.yaml" in agents.errors["b.yaml"]
    assert "livekit_rooms: call-a-* already answered by a.yaml" in agents.errors["c.yaml"]
