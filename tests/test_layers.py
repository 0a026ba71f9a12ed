"""The import graph, read statically (scripts/import_cycles.py): no module import cycles, the
call log a leaf every layer may append to, and the records API clear of the load-test tools."""

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
