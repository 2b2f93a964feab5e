"""The shape of services/aerplane, read from the source with `ast` (no import runs): functions stay short, imports
have no cycle and point down the layers.

Layers, bottom up: `core` (the algorithm), `common`, `data` and `rpc` (shared plumbing), the services
(`coefficient`, `reward`, `generation`, `learner`), the `launcher`, and the command line (`cli`). A module
may import its own layer and those below. Between services, one arrow is allowed: the learner is a client of the
coefficient service (`coefficient.client`). Late imports inside functions count like the others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "aerplane"
GENERATED = PACKAGE / "rpc" / "v1"
MAX_FUNCTION_LINES = 80
LAYERS = {
    "core": 0,
    "common": 1,
    "data": 1,
    "rpc": 1,
    "coefficient": 2,
    "reward": 2,
    "generation": 2,
    "learner": 2,
    "launcher": 3,
    "cli": 4,
}
CROSS_SERVICE = {("learner", "coefficient.client")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if GENERATED in path.parents:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _imports(name: str, tree: ast.Module) -> set[str]:
    """The aerplane modules `name` imports (a `from pkg import sub` counts as importing `pkg.sub`)."""
    found: set[str] = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if not base.startswith("aerplane"):
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, tree) for name, tree in TREES.items()}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_scan_sees_the_package():
    assert {"aerplane.learner.train", "aerplane.core.strategies", "aerplane.launcher.up"} <= set(MODULES)
    assert "aerplane.core.strategies" in GRAPH["aerplane.learner.driver"]
    assert not any("rpc.v1" in m for m in MODULES)  # generated code is left out


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_every_area_has_a_layer():
    areas = {_area(m) for m in MODULES} - {""}
    assert areas <= set(LAYERS), f"new top-level module or package without a layer: {sorted(areas - set(LAYERS))}"


def test_imports_point_down_the_layers():
    wrong = []
    for name, targets in GRAPH.items():
        src = _area(name)
        for target in targets:
            dst = _area(target)
            if not src or not dst or src == dst:
                continue
            up = LAYERS[dst] > LAYERS[src]
            sideways = LAYERS[dst] == LAYERS[src] == 2 and (src, target.removeprefix("aerplane.")) not in CROSS_SERVICE
            if up or sideways:
                wrong.append(f"{name} -> {target}")
    assert sorted(wrong) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected
