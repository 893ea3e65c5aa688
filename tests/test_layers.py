"""Layers, computed from the import graph: no import cycles between eventflow's packages,
and the core (engine, flows, tasks, states) imports nothing from `_runtime`, `_server`
or `_cli`. Imports under `if TYPE_CHECKING:` are left out: they never run.

A node of the graph is a subpackage (`eventflow._store`) or a top-level module
(`eventflow._engine`); cycles among the modules of one subpackage are its own affair.
The package's `__init__` (the public facade, which imports everything) is no node.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "eventflow"

CORE = ("eventflow._engine", "eventflow._flows", "eventflow._tasks", "eventflow._states")
ABOVE_THE_CORE = ("eventflow._runtime", "eventflow._server", "eventflow._cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, package: str) -> Iterator[str]:
    """Every name imported anywhere in `node` (functions too), TYPE_CHECKING blocks aside."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _imports(other, package)
        elif isinstance(child, ast.Import):
            yield from (alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (child.level - 1)]
                base = ".".join([*parts, *([child.module] if child.module else [])])
            yield from (f"{base}.{alias.name}" for alias in child.names)
        else:
            yield from _imports(child, package)


def import_graph() -> dict[str, set[str]]:
    """Module -> the eventflow modules it imports."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name not in paths:
            if "." not in name:
                return None
            name = name.rsplit(".", 1)[0]
        return name

    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = {resolve(i) for i in _imports(ast.parse(path.read_text()), package)}
        graph[name] = {m for m in found if m is not None and m != name}
    return graph


def node_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 and (PACKAGE / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    nodes: dict[str, set[str]] = {}
    for module, imported in graph.items():
        if module == "eventflow":
            continue
        for other in imported:
            a, b = node_of(module), node_of(other)
            if a != b:
                nodes.setdefault(a, set()).add(b)
    return nodes


def cycles(nodes: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in nodes.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def reached_from(graph: dict[str, set[str]], start: tuple[str, ...]) -> dict[str, str]:
    """Every module `start` imports, directly or not: module -> the module importing it."""
    via: dict[str, str] = {}
    todo = list(start)
    while todo:
        module = todo.pop()
        for other in sorted(graph.get(module, ())):
            if other not in via and other not in start:
                via[other] = module
                todo.append(other)
    return via


def test_no_import_cycle_between_packages() -> None:
    nodes = package_graph(import_graph())
    assert {"eventflow._runtime", "eventflow._store", "eventflow._engine"} <= set(nodes)
    assert cycles(nodes) == []


def test_the_core_imports_nothing_of_the_runtime_server_or_cli() -> None:
    graph = import_graph()
    via = reached_from(graph, CORE)
    chains = []
    for module in sorted(via):
        if module.startswith(ABOVE_THE_CORE):
            chain = [module]
            while chain[-1] in via:
                chain.append(via[chain[-1]])
            chains.append(" <- ".join(chain))
    assert chains == []


def test_the_checks_see_a_cycle_and_a_layer_broken() -> None:
    """The checks themselves, on a made-up graph."""
    graph = {
        "eventflow._engine": {"eventflow._metrics"},
        "eventflow._metrics": {"eventflow._runtime._liveness"},
        "eventflow._runtime._liveness": {"eventflow._engine"},
    }
    assert cycles(package_graph(graph)) == [
        ["eventflow._engine", "eventflow._metrics", "eventflow._runtime"]
    ]
    assert "eventflow._runtime._liveness" in reached_from(graph, CORE)
