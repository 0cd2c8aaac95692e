"""verifier/compare without an import cycle: node helpers in their own module, the
recursion depth passed explicitly, the comparator list injected, and comparators that
never import the engine."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from compare_corpus import Artefacts, ImageSpec

from enclave_audit.model.difference import NodeKind
from verifier.compare import COMPARATORS, compare_paths
from verifier.compare.base import Comparator
from verifier.compare.binary import BinaryComparator
from verifier.compare.engine import Engine

PACKAGE = Path(__file__).resolve().parents[3] / "verifier" / "compare"


def _imports(path: Path) -> set[str]:
    """verifier.compare modules a file imports, at any level (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "verifier.compare":
                found.update(f"verifier.compare.{a.name}" for a in node.names)
                found.add("verifier.compare")
            elif node.module.startswith("verifier.compare."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("verifier.compare"))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        name = "verifier.compare" if path.stem == "__init__" else f"verifier.compare.{path.stem}"
        graph[name] = {m for m in _imports(path) if m != name}
    return graph


def test_no_import_cycle_in_the_package() -> None:
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, dep]))
            if dep in graph and state.get(dep) is None:
                visit(dep, [*trail, node])
        state[node] = 2

    for node in graph:
        if state.get(node) is None:
            visit(node, [])


def test_comparators_never_import_the_engine_and_the_engine_no_comparator() -> None:
    graph = _graph()
    helpers = {"verifier.compare.base", "verifier.compare.nodes", "verifier.compare.evidence"}
    for module, deps in graph.items():
        if module in ("verifier.compare", "verifier.compare.engine"):
            continue
        assert "verifier.compare.engine" not in deps, module
        assert "verifier.compare" not in deps, module
    engine_deps = graph["verifier.compare.engine"]
    assert engine_deps <= helpers, engine_deps


def test_depth_travels_as_an_argument() -> None:
    for comparator in COMPARATORS:
        params = list(inspect.signature(comparator.compare).parameters)
        assert params[-1] == "depth", (comparator.name, params)
    assert "depth" in inspect.signature(Engine.compare).parameters
    assert not hasattr(Engine, "compare_nested") and not hasattr(Engine, "depth")


def test_the_registry_is_injected(
    artefacts: Artefacts, base_spec: ImageSpec, base_image: Path
) -> None:
    other = artefacts.image(base_spec.replace(cmdline=base_spec.cmdline + " quiet"), "inj.eif")
    bytes_only: tuple[Comparator, ...] = (BinaryComparator(),)
    report = compare_paths(base_image, other, registry=bytes_only)
    assert report.root is not None and report.root.kind is NodeKind.BINARY
    full = compare_paths(base_image, other)
    assert full.root is not None and full.root.kind is NodeKind.IMAGE
