"""The package's shape: no import cycle inside ``peftbench/`` and no module past ~450 lines.

The import graph is built from the source with ``ast``: every ``import`` and ``from ... import`` anywhere in a module,
inside functions and ``if TYPE_CHECKING:`` blocks included, so a lazy import cannot hide a cycle. An edge goes to
the module imported (``from peftbench.run import train`` → ``peftbench.run.train``; ``from peftbench.run.train import
run`` → ``peftbench.run.train``). The package a module sits in is not an edge of its own: Python runs the package's
``__init__`` first, and the subpackages' ``__init__`` files hold only their docstring (tested below), while the top
``peftbench/__init__.py`` imports lazily, on attribute access, for users of the public API.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "peftbench"
MAX_LINES = 450
LAYERS = ("space", "run", "analysis")  # a layer may import the layers before it, never those after it


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(node: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The peftbench modules one import statement of module ``name`` imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:
        anchor = name.split(".") if is_package else name.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in known:
            found.add(f"{base}.{alias.name}")  # from peftbench.run import train: the module train
        elif base in known:
            found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            edges |= imported(node, name, is_package, set(known))
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_sees_function_level_imports():
    tree = ast.parse("def f():\n    from peftbench.run import train\n    from .stats import paired_test\n")
    known = {"peftbench.run.train", "peftbench.analysis.stats", "peftbench.analysis.report"}
    edges = set()
    for node in ast.walk(tree):
        edges |= imported(node, "peftbench.analysis.report", False, known)
    assert edges == {"peftbench.run.train", "peftbench.analysis.stats"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_import_only_earlier_layers():
    """design space → one run → analysis: the space imports neither; a run never imports the analysis."""
    for name, edges in import_graph().items():
        layer = name.split(".")[1] if name.count(".") >= 1 else None
        if layer not in LAYERS:
            continue
        later = LAYERS[LAYERS.index(layer) + 1 :]
        wrong = sorted(edge for edge in edges if edge.split(".")[1:2] and edge.split(".")[1] in later)
        assert not wrong, f"{name} imports {wrong}, a later layer"


def test_subpackage_inits_hold_only_their_docstring():
    for layer in LAYERS:
        tree = ast.parse((PACKAGE / layer / "__init__.py").read_text(encoding="utf-8"))
        body = [node for node in tree.body if not isinstance(node, ast.ImportFrom) or node.module != "__future__"]
        assert len(body) == 1 and ast.get_docstring(tree), f"peftbench/{layer}/__init__.py: a docstring only"


def test_no_module_too_long():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
