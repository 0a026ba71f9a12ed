"""The import graph, read statically (scripts/import_cycles.py): no module or package import
cycles, every package on its floor importing only the floors below it, the call log a leaf every
layer may append to, and the records API clear of the load-test tools."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import import_cycles  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    """The module graph, read once (parsing every module takes seconds on a busy machine)."""
    return import_cycles.graph("modules")


# The architecture's floors, low to high. A package imports only packages on lower floors; the
# foundations (leaf helpers every layer shares) import only one another.
FOUNDATIONS = {
    "switchboard",
    "switchboard.addresses",
    "switchboard.audio",
    "switchboard.call_ids",  # every call's id, spelled once (call-<CallSid>, fresh ids)
    "switchboard.call_log",
    "switchboard.dtmf_tones",
    "switchboard.errors",
    "switchboard.http",
    "switchboard.local_redis",
    "switchboard.observability",
    "switchboard.private_files",
    "switchboard.privacy",  # PII detection in text: rules only (records/redaction.py applies them)
    "switchboard.restarts",
    "switchboard.settings",
    "switchboard.speech_end",
    "switchboard.spoken_lines",
}
FLOORS: list[set[str]] = [
    FOUNDATIONS,
    {"switchboard.agent"},  # the agent as configured: no pipeline
    {"switchboard.engines"},  # STT, TTS, responders
    {"switchboard.analysis", "switchboard.dispatch"},  # recordings measured; Redis
    {"switchboard.records"},
    {"switchboard.telephony"},  # ingress adapters
    {"switchboard.call"},  # admission, runner, the conversation's pipeline and control
    {"switchboard.orchestrator", "switchboard.worker"},  # the two servers, apart
    {"switchboard.dialer", "switchboard.emulators", "switchboard.loadtest", "switchboard.supervisor"},
    {"switchboard.testing"},  # scenario suites and replay, on the load test's caller simulator
    {"switchboard.cli"},
]


@pytest.fixture(scope="module")
def package_edges() -> dict[str, set[str]]:
    return import_cycles.graph("packages")


def floor_of(package: str) -> int:
    return next(i for i, floor in enumerate(FLOORS) if package in floor)


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in edges.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_module_imports_itself_through_others(edges: dict[str, set[str]]) -> None:
    assert import_cycles.cycles(edges) == []


def test_no_package_imports_itself_through_others(package_edges: dict[str, set[str]]) -> None:
    assert import_cycles.cycles(package_edges) == []


def test_every_package_stands_on_one_floor(package_edges: dict[str, set[str]]) -> None:
    placed = [package for floor in FLOORS for package in floor]
    assert len(placed) == len(set(placed))
    assert set(package_edges) == set(placed)


def test_packages_import_only_the_floors_below_them(package_edges: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{package} -> {target}"
        for package, targets in package_edges.items()
        for target in targets
        if not (package in FOUNDATIONS and target in FOUNDATIONS)
        and floor_of(target) >= floor_of(package)
    )
    assert upward == []


def test_the_call_log_imports_nothing_of_switchboard(edges: dict[str, set[str]]) -> None:
    assert edges["switchboard.call_log"] == set()


def test_the_records_api_does_not_load_the_load_test_package(edges: dict[str, set[str]]) -> None:
    edges = {module: set(targets) for module, targets in edges.items()}
    # A package's __init__ runs with any of its modules: count the packages too.
    for targets in list(edges.values()):
        for target in targets:
            parts = target.split(".")
            edges.setdefault(target, set()).update(
                ".".join(parts[:i]) for i in range(2, len(parts))
            )
    loaded = reachable(edges, "switchboard.orchestrator.calls_api")
    assert not {m for m in loaded if m.startswith("switchboard.loadtest")}
