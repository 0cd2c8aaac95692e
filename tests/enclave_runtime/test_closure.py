"""The image's /app is exactly the import closure of the runtime's entry point (planned entries).

The same comparison on the built reference image's application ramdisk is
``tests/builder/test_boundary.py``; this one needs no build: it compares the files the
builder will copy (``builder.app.collect_sources`` over the spec's ``[app] packages``)
with the closure computed from the real sources.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

from import_closure import entry_module, import_closure

from builder.app import collect_sources
from builder.reference import REFERENCE_SPEC
from builder.spec import load_spec


def _provided_by_spec() -> set[str]:
    """Top-level import names the spec's wheels and Debian python3-* packages provide."""
    spec = load_spec(REFERENCE_SPEC).spec
    names: set[str] = set()
    for wheel in spec.wheels:
        dist = importlib.metadata.distribution(wheel.name)
        for file in dist.files or ():
            top = file.parts[0]
            if top.endswith((".dist-info", ".data")) or top == "..":
                continue
            names.add(top.removesuffix(".py").split(".")[0])
    for package in spec.debian.packages:
        if package.name.startswith("python3-"):
            names.add(package.name.removeprefix("python3-"))
    return names


def test_planned_app_is_exactly_the_import_closure() -> None:
    loaded = load_spec(REFERENCE_SPEC)
    app = loaded.spec.app
    root = loaded.source_root
    assert app.packages == ("enclave_runtime",)
    closure = import_closure(root, entry_module(app.cmd), app.packages)
    planned = {f.rel for f in collect_sources(root, app.packages)}
    assert planned == closure.files(root), (
        f"in /app but never imported: {sorted(planned - closure.files(root))};"
        f" imported but not in /app: {sorted(closure.files(root) - planned)}"
    )
    # the pinned reference values are the one data file, read by the bridge client
    assert {p.name for p in closure.data_files} == {"reference-values.json"}
    missing = closure.external - set(sys.stdlib_module_names) - _provided_by_spec()
    assert not missing, f"imported but neither stdlib nor in the spec: {sorted(missing)}"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_closure_follows_lazy_relative_and_dynamic_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/__main__.py": "from app.run import main\nmain()\n",
            "app/run.py": (
                "import importlib\nfrom pathlib import Path\n"
                "VALUES = Path(__file__).with_name('values.json')\n"
                "def main():\n    from . import lazy\n    importlib.import_module('app.dyn')\n"
            ),
            "app/lazy.py": "from .sub import leaf\nimport numpy\n",
            "app/dyn.py": "",
            "app/sub/__init__.py": "",
            "app/sub/leaf.py": "",
            "app/values.json": "{}",
            "app/stray.py": "import os\n",  # nobody imports it
            "app/notes.txt": "",  # nobody names it
        },
    )
    closure = import_closure(tmp_path, entry_module(["python3", "-m", "app"]), ["app"])
    assert closure.files(tmp_path) == {
        "app/__init__.py",
        "app/__main__.py",
        "app/run.py",
        "app/lazy.py",
        "app/dyn.py",
        "app/sub/__init__.py",
        "app/sub/leaf.py",
        "app/values.json",
    }
    assert "numpy" in closure.external and "os" not in closure.external
