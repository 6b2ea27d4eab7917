"""The layout's two import rules, read statically (ast) from the source tree:

(a) `tasks/` imports nothing from `circuits` but the leaf modules errors, tokenizer and jsonio (any
    import anywhere in the file counts, lazy ones too), and those leaves import no other project module;
(b) no import cycle among the modules of `circuits` and `tasks`, counting the imports that run when a
    module is imported: module level, including `try`/`if`/`with` blocks and class bodies, but not
    function bodies or `if TYPE_CHECKING:` blocks. `from pkg import name` is an edge to `pkg.name` when
    that is a module, else to `pkg`; importing a submodule does not count as an edge to its parent
    package, so a package `__init__` importing its own submodules is no cycle by itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("circuits", "tasks")
LEAVES = {"circuits.errors", "circuits.tokenizer", "circuits.jsonio"}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the project's packages."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _eager_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _eager_imports(node.body)
            yield from _eager_imports(node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _eager_imports(block)
        elif isinstance(node, (ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While, ast.ClassDef)):
            yield from _eager_imports(node.body)
            yield from _eager_imports(getattr(node, "orelse", []))


def _all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Project modules an import statement of `module` loads (outside modules are dropped)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if _is_package(module) else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        names = []
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            names.append(sub if sub in MODULES else source)
    out = []
    for name in names:
        while name and name not in MODULES and name.split(".")[0] in PACKAGES:
            name = name.rpartition(".")[0]  # `import a.b.attr` style: the longest module prefix
        if name in MODULES:
            out.append(name)
    return out


@cache
def _parsed(module: str) -> ast.Module:
    path = MODULES[module]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def import_graph(eager_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        tree = _parsed(module)
        nodes = _eager_imports(tree.body) if eager_only else _all_imports(tree)
        graph[module] = {t for node in nodes for t in _targets(module, node)} - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for comp in components:
        start = min(comp)
        # shortest path back to `start` inside the component (breadth first)
        parent: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & comp):
                    if w == start:
                        found = v
                        break
                    if w not in parent:
                        parent[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != start:
            path.append(parent[path[-1]])
        cycles.append([*reversed(path), start])
    return sorted(cycles)


def test_graph_builder_sees_known_edges():
    """The static reader finds imports it must find (guards the rules below against an empty graph)."""
    graph = import_graph(eager_only=True)
    assert "circuits.discovery.pipeline" in graph and "tasks.base" in graph
    assert "circuits.discovery.config" in graph["circuits.discovery.pipeline"]
    assert "circuits.errors" in graph["tasks.base"]
    assert sum(len(v) for v in graph.values()) > 100


def test_cycle_search_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_tasks_import_only_leaf_modules_of_circuits():
    graph = import_graph(eager_only=False)
    bad = {m: sorted(t for t in targets if t.startswith("circuits") and t not in LEAVES)
           for m, targets in graph.items() if m.startswith("tasks")}
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, f"tasks/ imports non-leaf circuits modules: {bad}"
    leaves_importing = {m: sorted(graph[m] - LEAVES) for m in LEAVES if graph[m] - LEAVES}
    assert not leaves_importing, f"leaf modules import other project modules: {leaves_importing}"


def test_no_import_cycle_among_project_modules():
    cycles = find_cycles(import_graph(eager_only=True))
    assert not cycles, "import cycles (module-level imports):\n" + "\n".join(" -> ".join(c) for c in cycles)
