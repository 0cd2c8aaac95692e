"""The import closure of the image's command, computed from the real sources.

Starting from the module ``cmd`` runs (``python3 -m <module>``), every ``import`` and
``from ... import`` anywhere in a module (functions included: lazy imports run too),
every ``importlib.import_module("<literal>")`` and every parent package is followed
through the sources under ``root``.  A module that is not there is external: it must
come from the interpreter's standard library or the image's site-packages.

Data files count when a module of the closure names them: a string constant equal to
the file name, in a module of the same directory (``Path(__file__).with_name(...)``).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass
class Closure:
    modules: dict[str, Path] = field(default_factory=dict)  # dotted name -> source file
    data_files: set[Path] = field(default_factory=set)
    external: set[str] = field(default_factory=set)  # top-level names imported from outside

    def files(self, root: Path) -> set[str]:
        """Every file of the closure, relative to ``root`` (posix)."""
        paths = set(self.modules.values()) | self.data_files
        return {p.relative_to(root).as_posix() for p in paths}


def entry_module(cmd: Sequence[str]) -> str:
    """The module ``python3 -m <module>`` runs (the package's ``__main__`` for a package)."""
    if len(cmd) < 3 or cmd[1] != "-m":
        raise ValueError(f"cmd {list(cmd)!r} does not run a module with -m")
    return cmd[2]


def _source(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imported_names(tree: ast.AST, module: str, package: bool) -> Iterable[str]:
    here = module if package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base
            for alias in node.names:
                if alias.name != "*":
                    yield f"{base}.{alias.name}"  # a submodule, if one exists by that name
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def _string_constants(tree: ast.AST) -> set[str]:
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def import_closure(root: Path, entry: str, packages: Sequence[str]) -> Closure:
    """The closure of ``entry`` over the sources of ``packages`` under ``root``."""
    closure = Closure()
    local = set(packages)
    pending = [entry]
    if entry.split(".")[0] in local and _source(root, entry) is not None:
        if _is_package(_source(root, entry)):  # type: ignore[arg-type]
            pending.append(f"{entry}.__main__")
    constants: dict[Path, set[str]] = {}
    while pending:
        name = pending.pop()
        parts = name.split(".")
        if parts[0] not in local:
            if name and parts[0] not in sys.builtin_module_names:
                closure.external.add(parts[0])
            continue
        for depth in range(1, len(parts) + 1):  # importing a.b.c imports a and a.b first
            prefix = ".".join(parts[:depth])
            if prefix in closure.modules:
                continue
            path = _source(root, prefix)
            if path is None:
                break  # an attribute of the module above, not a module
            closure.modules[prefix] = path
            tree = ast.parse(path.read_bytes(), filename=str(path))
            constants[path] = _string_constants(tree)
            pending.extend(_imported_names(tree, prefix, _is_package(path)))
    for package in packages:
        for path in (root / package).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            if any(
                path.name in names and source.parent == path.parent
                for source, names in constants.items()
            ):
                closure.data_files.add(path)
    return closure


def app_files_in_tree(tree: Path) -> set[str]:
    """Files under an extracted ``/app`` (relative, posix), caches excluded."""
    return {
        PurePosixPath(p.relative_to(tree).as_posix()).as_posix()
        for p in tree.rglob("*")
        if p.is_file() or p.is_symlink()
    }
