"""No import circles among the toolkit's modules (read statically with :mod:`ast`, nothing is run).

Three graphs over the modules of ``mnerqg_graph``, ``detectors``, ``experiments`` and
``benchmarks``:

* module level, imports that run when the module is imported (module body, class bodies,
  ``if``/``try``/``with`` blocks; not inside functions, not under ``if TYPE_CHECKING:``): no cycle
  at all;
* package level, the same imports folded onto the top-level packages: no cycle except
  :data:`ALLOWED_PACKAGE_CYCLES`;
* pairs of modules that import each other, counting imports inside functions too (a deferred
  import hides a circle from Python, not from a reader): none except :data:`ALLOWED_MUTUAL`.

And one direction between the two libraries: ``detectors`` (the detector toolkit) builds on
``mnerqg_graph`` (the core), which imports ``detectors`` nowhere, deferred imports included, but
in :data:`ALLOWED_CORE_TO_DETECTORS`.

Importing ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` first, so it is an edge to each of
them too, except to the packages that contain the importing module (they are already being
imported). A package ``__init__`` importing its own submodules is therefore not a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mnerqg_graph", "detectors", "experiments", "benchmarks")

#: Package-level circles still present, each to be broken by the change named beside it (none:
#: the image backbones and region sources the model needs live in ``mnerqg_graph``, and
#: ``detectors`` builds on it).
ALLOWED_PACKAGE_CYCLES: set[frozenset[str]] = set()

#: The only imports of ``detectors`` from ``mnerqg_graph``, deferred ones included, with the reason.
ALLOWED_CORE_TO_DETECTORS: set[tuple[str, str]] = {
    # a model with ``model.image.regions=detector`` builds or loads its frozen detector when built
    ("mnerqg_graph.model", "detectors"),
    ("mnerqg_graph.model", "detectors.detection"),
}

#: Modules that import each other through a deferred (in-function) import, with the reason.
ALLOWED_MUTUAL: set[frozenset[str]] = {
    # MnerqgModel.save_pretrained/from_pretrained call the checkpoint I/O, which builds models
    frozenset({"mnerqg_graph.model", "mnerqg_graph.training.checkpoint"}),
}


def _module_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], deferred: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of ``body`` (``deferred``: also those inside functions)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _imports(node.body, deferred)
            yield from _imports(node.orelse, deferred)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _imports(block, deferred)
            for handler in node.handlers:
                yield from _imports(handler.body, deferred)
        elif isinstance(node, (ast.With, ast.ClassDef, ast.For, ast.While)):
            yield from _imports(node.body, deferred)
        elif deferred and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _imports(node.body, deferred)


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the toolkit modules its imports run (see the module docstring)."""
    files = _module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")).body, deferred):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    here = here[: len(here) - node.level + 1]
                    base = ".".join([*here, base] if base else here)
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for name in names:
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    target = ".".join(parts[:i])
                    if target in files and not (module + ".").startswith(target + "."):
                        targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": {"e"}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["e", "e2"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_the_toolkit() -> None:
    graph = import_graph()
    assert "mnerqg_graph.fusion.base" in graph["mnerqg_graph.fusion.hgt"]
    assert "mnerqg_graph.data.tags" in graph["mnerqg_graph.data.types"]
    # a package importing its own submodules is not a circle; deferred imports are not counted
    assert "mnerqg_graph.fusion" not in graph["mnerqg_graph.fusion.hgt"]
    assert "mnerqg_graph.training.checkpoint" not in graph["mnerqg_graph.model"]
    assert "mnerqg_graph.training.checkpoint" in import_graph(deferred=True)["mnerqg_graph.model"]


def test_no_module_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_no_package_import_cycles_but_the_allowed() -> None:
    packages: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for module, targets in import_graph().items():
        packages[module.split(".")[0]] |= {t.split(".")[0] for t in targets}
    for package in packages:
        packages[package].discard(package)
    assert set(cycles(packages)) <= ALLOWED_PACKAGE_CYCLES


def test_no_modules_import_each_other_but_the_allowed() -> None:
    graph = import_graph(deferred=True)
    mutual = {frozenset({a, b}) for a, targets in graph.items() for b in targets if a in graph[b]}
    assert mutual <= ALLOWED_MUTUAL


def test_the_core_does_not_import_the_detector_toolkit() -> None:
    graph = import_graph(deferred=True)
    edges = {
        (module, target)
        for module, targets in graph.items()
        if module.split(".")[0] == "mnerqg_graph"
        for target in targets
        if target.split(".")[0] == "detectors"
    }
    assert edges <= ALLOWED_CORE_TO_DETECTORS
