"""The import graph of models/, service/ and bench/: no cycle, and dependencies point inward.

Read from the source with `ast` (nothing is imported), counting top-level, function-local and
`TYPE_CHECKING` imports alike: a cycle held together by a deferred or type-only import is
still a cycle. An import names the module it imports (`from a.b import c` is `a.b.c` when
that is a module, else `a.b`), as import-linter's graph does; importing a module does not
count as importing its parent packages.

The layers of service/, innermost first (a module may import its own package and the
layers before it; packages that share a layer may not import each other):

    models                                              the ML core
    service.errors · service.settings · service.observability
    service.storage                                     all Redis I/O
    service.serving · service.ingest                    the served model; events on their way in
    service.learner · service.operations                the learner; the operator's controls
    service.runtime                                     the container of one model's components
    service.lifecycle                                   the composition root
    service.http                                        the only package importing FastAPI
    service.cli                                         the command line
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "service", "bench")

LAYERS: tuple[tuple[str, ...], ...] = (
    ("models",),
    ("service.errors", "service.settings", "service.observability"),
    ("service.storage",),
    ("service.serving", "service.ingest"),
    ("service.learner", "service.operations"),
    ("service.runtime",),
    ("service.lifecycle",),
    ("service.http",),
    ("service.cli",),
)
# Edges the layers would allow but the architecture does not.
FORBIDDEN = (
    # The HTTP layer talks to the learner only through the Runtime's attributes.
    ("service.http", "service.learner"),
)
WEB_FRAMEWORKS = ("fastapi", "starlette")
# Function-local imports of project modules in service/ and models/, each with its reason.
# A new one needs a line here: a deferred import is how import cycles hide.
LAZY_IMPORTS = {
    # Validating the settings builds a TrainerConfig; its import loads torch, which the
    # command line must not wait for before parsing its arguments.
    ("service.settings", "models.strategies"),
    ("service.settings", "models.trainer"),
    # Each command loads only what it runs: FastAPI, torch, httpx and rich.
    ("service.cli.commands", "service.http.app"),
    ("service.cli.commands", "service.lifecycle"),
    ("service.cli.commands", "service.observability.prometheus"),
    ("service.cli.commands", "service.cli.replay"),
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str  # a project module, or a third-party top-level name
    line: int
    kind: str  # "top", "local" (inside a function) or "typing" (under TYPE_CHECKING)

    def __str__(self) -> str:
        return f"{self.source}:{self.line} -> {self.target} ({self.kind})"


def module_name(path: Path, root: Path) -> str:
    """models/trainer.py -> models.trainer; service/http/__init__.py -> service.http."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement of a module with its kind."""

    def visit(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, kind
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(child, "local")
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), "typing")
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                yield from visit(child, kind)

    yield from visit(tree, "top")


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of dotted `name` that is a project module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return name


def import_edges(modules: dict[str, Path], packages: tuple[str, ...]) -> list[Edge]:
    """Every import of every project module: project targets resolved to modules, third-party
    ones reduced to their top-level name."""
    edges = []
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, kind in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the module's own package upwards
                    anchor = source.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                top = target.split(".")[0]
                resolved = _resolve(target, modules) if top in packages else top
                edges.append(Edge(source, resolved, node.lineno, kind))
    return edges


def find_cycles(edges: list[Edge], modules: dict[str, Path]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component that has one (Tarjan)."""
    graph: dict[str, dict[str, Edge]] = {name: {} for name in modules}
    for edge in edges:
        if edge.target in graph and edge.target != edge.source:
            graph[edge.source].setdefault(edge.target, edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # recursion depth is bounded by the module count
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_a_cycle_in(sorted(component), graph) for component in components]


def _a_cycle_in(component: list[str], graph: dict[str, dict[str, Edge]]) -> list[Edge]:
    """A shortest path from the component's first member back to itself (breadth first)."""
    members = set(component)
    start = component[0]
    came_by: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, edge in sorted(graph[node].items()):
                if target not in members:
                    continue
                if target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, came_by[path[0].source])
                    return path
                if target not in came_by:
                    came_by[target] = edge
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - Tarjan said so


def package_of(module: str) -> str | None:
    """The layer package a module belongs to (the longest one that contains it)."""
    owners = [p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")]
    return max(owners, key=len) if owners else None


def layer_breaches(edges: list[Edge]) -> list[str]:
    """Edges between layer packages that point outward, across one layer, or are forbidden."""
    rank = {package: i for i, layer in enumerate(LAYERS) for package in layer}
    out = []
    for edge in edges:
        source, target = package_of(edge.source), package_of(edge.target)
        if source is None or target is None or source == target:
            continue
        if rank[target] > rank[source]:
            out.append(f"{edge}: {source} may not import the outer layer {target}")
        elif rank[target] == rank[source]:
            out.append(f"{edge}: {source} and {target} share a layer and stay independent")
        elif (source, target) in FORBIDDEN:
            out.append(f"{edge}: {source} may not import {target}")
    return out


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Edge]]:
    modules = project_modules(ROOT, PACKAGES)
    return modules, import_edges(modules, PACKAGES)


def test_no_import_cycle_among_project_modules(graph: tuple[dict[str, Path], list[Edge]]) -> None:
    modules, edges = graph
    assert len(modules) > 60 and any(e.target == "service.storage.keys" for e in edges)
    cycles = find_cycles(edges, modules)
    assert not cycles, "import cycles:\n" + "\n\n".join(
        "\n".join(f"  {edge}" for edge in cycle) for cycle in cycles
    )


def test_every_service_module_belongs_to_a_layer(
    graph: tuple[dict[str, Path], list[Edge]],
) -> None:
    modules, _ = graph
    unplaced = [m for m in modules if m.startswith("service.") and package_of(m) is None]
    assert not unplaced, f"add these to LAYERS in {Path(__file__).name}: {unplaced}"


def test_dependencies_point_inward(graph: tuple[dict[str, Path], list[Edge]]) -> None:
    _, edges = graph
    breaches = layer_breaches(edges)
    assert not breaches, "layer breaches:\n" + "\n".join(breaches)


def test_only_the_http_package_imports_a_web_framework(
    graph: tuple[dict[str, Path], list[Edge]],
) -> None:
    _, edges = graph
    outside = [
        str(e)
        for e in edges
        if e.target in WEB_FRAMEWORKS and package_of(e.source) not in ("service.http", None)
    ]
    assert not outside, "FastAPI/Starlette outside service/http:\n" + "\n".join(outside)


def test_function_local_project_imports_are_the_listed_few(
    graph: tuple[dict[str, Path], list[Edge]],
) -> None:
    _, edges = graph
    lazy = {
        (e.source, e.target)
        for e in edges
        if e.kind == "local"
        and e.source.split(".")[0] in ("models", "service")
        and e.target.split(".")[0] in PACKAGES
    }
    assert lazy - LAZY_IMPORTS == set(), "unlisted function-local imports (see LAZY_IMPORTS)"
    assert LAZY_IMPORTS - lazy == set(), "LAZY_IMPORTS lists imports that are gone"


# -- the checks themselves, on a small tree with a known cycle and a known breach -----------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checks_see_cycles_held_by_deferred_and_type_only_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "service/__init__.py": "",
            "service/a.py": "from service.b import B\n",
            "service/b.py": "def f():\n    from service import c\n",
            "service/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from service.a import A\n"
            ),
            "service/d.py": "from . import a\n",
        },
    )
    modules = project_modules(tmp_path, ("service",))
    edges = import_edges(modules, ("service",))
    assert {str(e) for e in edges} == {
        "service.a:1 -> service.b (top)",
        "service.b:2 -> service.c (local)",
        "service.c:3 -> service.a (typing)",
        "service.c:1 -> typing (top)",
        "service.d:1 -> service.a (top)",
    }
    (cycle,) = find_cycles(edges, modules)
    assert [e.source for e in cycle] == ["service.a", "service.b", "service.c"]


def test_the_checks_see_an_outward_import() -> None:
    edges = [
        Edge("service.storage.keys", "service.http.app", 3, "local"),
        Edge("service.http.routes.learn", "service.learner.loop", 9, "top"),
        Edge("service.learner.loop", "service.operations.model_control", 5, "typing"),
        Edge("service.learner.loop", "service.storage.keys", 7, "top"),
    ]
    breaches = layer_breaches(edges)
    assert len(breaches) == 3
    assert "service.storage may not import the outer layer service.http" in breaches[0]
    assert "service.http may not import service.learner" in breaches[1]
    assert "share a layer" in breaches[2]
