"""The architecture as a test: which part of groupbuy_async may import which, and no import
cycles. Imports are read from the source with ast: those inside functions and under
TYPE_CHECKING count like any other, since they still tie the modules together."""

import ast
from collections.abc import Container, Iterator
from pathlib import Path

import groupbuy_async

PACKAGE = "groupbuy_async"
SOURCE = Path(groupbuy_async.__file__).parent

# The parts of the package (a top-level module or subpackage; "" is the package itself),
# top to bottom. A part imports its own layer and the layers below it, never one above.
LAYERS: list[set[str]] = [
    {"cli", "__main__"},  # entry points
    {"dev"},  # the local demo: embedded servers, the API and the worker in one process
    {"http", "worker"},  # what a process serves or runs
    {"process"},  # what every process shares: startup failures, signals, its event loop
    {"bootstrap"},  # builds the shared objects (pool, sender, dispatcher, metrics)
    {"trade", "callbacks", "merchants"},  # the domain: trade, callbacks, merchants (tenants)
    {"db", "settings", "errors", "logs", ""},
]
# Parts that only these others may import: dev/ is never loaded by `api` or `worker`, only
# by the `dev` verb (and, with GROUPBUY_MOCK_MERCHANT, `api` for its mock merchant). Tests and
# benchmarks, outside the package, use its embedded servers, databases and merchant too.
IMPORTED_ONLY_BY: dict[str, set[str]] = {"dev": {"cli"}}

Graph = dict[str, set[str]]


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def containing_module(name: str, known: Container[str]) -> str | None:
    """The module a dotted name is, or is defined in (`a.b.f` -> `a.b`); None outside."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(module: str, path: Path, source: str) -> Iterator[str]:
    """Every dotted name this module imports, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> Graph:
    known = modules()
    graph: Graph = {}
    for module, path in known.items():
        names = imported_names(module, path, path.read_text())
        targets = {containing_module(name, known) for name in names}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def part(module: str) -> str:
    return module.removeprefix(PACKAGE).removeprefix(".").partition(".")[0]


def layer(module: str) -> int:
    (index,) = [i for i, parts in enumerate(LAYERS) if part(module) in parts]
    return index


def cycles(graph: Graph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component: set[str] = set()
            while not component or module not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def violations(graph: Graph) -> set[str]:
    found = {"cycle: " + " <-> ".join(sorted(c)) for c in cycles(graph)}
    for module, targets in graph.items():
        for target in targets:
            only_by = IMPORTED_ONLY_BY.get(part(target), {part(module)}) | {part(target)}
            if layer(target) < layer(module) or part(module) not in only_by:
                found.add(f"{module} -> {target}")
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {part(m) for m in modules()}
    assert parts == set().union(*LAYERS), "add new parts to LAYERS, remove gone ones"


SAMPLE = """
from typing import TYPE_CHECKING

import groupbuy_async.db
from .. import errors
from .rules import decide

if TYPE_CHECKING:
    from ..http.app import create_app


def later() -> None:
    from ..worker import build_worker
"""


def test_imports_at_any_depth_and_relative_ones_are_resolved() -> None:
    names = set(imported_names(f"{PACKAGE}.callbacks.x", Path("x.py"), SAMPLE))
    known = {f"{PACKAGE}.{m}" for m in ("db", "errors", "callbacks.rules", "http.app", "worker")}
    assert {containing_module(name, known) for name in names} == known | {None}
    assert f"{PACKAGE}.dev.run" in import_graph()[f"{PACKAGE}.cli"]


def test_imports_point_down_the_layers_without_cycles() -> None:
    assert sorted(violations(import_graph())) == [], "against LAYERS or IMPORTED_ONLY_BY"
