"""Import direction: the auditor never depends on its subject; the core depends on nothing."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("enclave_audit", "builder", "verifier", "reports", "reference_enclave")
#: package -> project packages it may import (the CLI in enclave_audit.cli may import all)
ALLOWED = {
    "enclave_audit": {"enclave_audit"},
    "builder": {"enclave_audit", "builder"},
    "verifier": {"enclave_audit", "builder", "verifier"},
    "reports": {"enclave_audit", "builder", "verifier", "reports"},
    "reference_enclave": {"enclave_audit", "builder", "verifier", "reference_enclave"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def test_import_direction():
    wrong = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("enclave_audit", "cli"):
                continue  # the CLI wires everything together
            bad = _imports(path) - ALLOWED[package]
            if bad:
                wrong.append(f"{rel} imports {sorted(bad)}")
    assert not wrong, "\n".join(wrong)
