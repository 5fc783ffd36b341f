"""The gateway's modules import one another in one direction only.

Imports are read from the source (`ast`), those under ``if TYPE_CHECKING:`` included:
a cycle that exists only in type hints still says two modules know each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kairos_gateway

PACKAGE = "kairos_gateway"
ROOT = Path(kairos_gateway.__path__[0])


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of this package that ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith(PACKAGE):
                continue
            for alias in node.names:
                # ``from . import ops`` names a module; ``from .x import Y`` a member.
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
    found.discard(name)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def _is_parent(module: str, child: str) -> bool:
    """A package's ``__init__`` importing its own submodules is how packages work."""
    return child.startswith(module + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if _is_parent(node, nxt):
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_reader_finds_imports() -> None:
    graph = _graph()
    assert "kairos_gateway.runtime" in graph["kairos_gateway.app"]
    assert "kairos_gateway.snapshot" in graph["kairos_gateway.runtime"]
    # Type-only imports count too.
    assert "kairos_gateway.runtime" in graph["kairos_gateway.respond"]
    assert _cycles({"a.x": {"a.y"}, "a.y": {"a.x"}}) == [["a.x", "a.y", "a.x"]]


def test_no_import_cycle_in_the_gateway() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_runtime_knows_nothing_of_the_edge_or_the_management_side() -> None:
    graph = _graph()
    below = _reachable(graph, "kairos_gateway.runtime")
    forbidden = {
        m
        for m in below
        if m.split(".")[1:2]
        and m.split(".")[1] in {"app", "exchange", "server", "management", "cluster", "ops", "cli"}
    }
    assert not forbidden, f"the runtime layer reaches {sorted(forbidden)}"


def test_nothing_depends_on_the_app() -> None:
    graph = _graph()
    users = {m for m, deps in graph.items() if "kairos_gateway.app" in deps}
    assert users <= {"kairos_gateway", "kairos_gateway.cli"}, sorted(users)
