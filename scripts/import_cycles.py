"""Print the import cycles between Switchboard's packages and modules (exit 1 if any).

    python scripts/import_cycles.py            # packages (agent, call, engines, ...)
    python scripts/import_cycles.py --modules  # modules

Read with ``ast`` from ``src/switchboard``: every ``import``/``from`` naming a switchboard
module counts, function-local ones too (a layer reaching up at run time is still reaching up);
imports under ``if TYPE_CHECKING:`` do not (they are annotations only).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "switchboard"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] == ROOT:
                found.add(base)
    return found


def graph(level: str) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        name = module_name(path)
        node = _node(name, level)
        for target in imports_of(path, name):
            other = _node(target, level)
            if other != node:
                edges.setdefault(node, set()).add(other)
        edges.setdefault(node, set())
    return edges


def _node(name: str, level: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if level == "packages" else name


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="modules, not packages")
    args = parser.parse_args()
    edges = graph("modules" if args.modules else "packages")
    found = cycles(edges)
    for component in found:
        inside = {v: sorted(w for w in edges[v] if w in component) for v in component}
        print(" <-> ".join(component))
        for v, ws in inside.items():
            print(f"    {v} -> {', '.join(ws)}")
    print(f"{len(found)} cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
