"""Import direction: the auditor never depends on the host side of its subject; the core
depends only on the in-enclave package; the in-enclave package depends on nothing.

``enclave_runtime`` is what the image's ``/app`` holds.  The auditor imports the
primitives it shares with the image (strict CBOR, HPKE, the model format, the error
families) from it, so it checks with the very code the enclave runs; the reverse
direction would put the auditor into the image's measurements.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = (
    "enclave_runtime",
    "enclave_audit",
    "builder",
    "verifier",
    "reports",
    "reference_enclave",
)
#: package -> project packages it may import (the CLI in enclave_audit.cli may import all)
ALLOWED = {
    "enclave_runtime": {"enclave_runtime"},
    "enclave_audit": {"enclave_runtime", "enclave_audit"},
    "builder": {"enclave_runtime", "enclave_audit", "builder"},
    "verifier": {"enclave_runtime", "enclave_audit", "builder", "verifier"},
    "reports": {"enclave_runtime", "enclave_audit", "builder", "verifier", "reports"},
    "reference_enclave": {
        "enclave_runtime",
        "enclave_audit",
        "builder",
        "verifier",
        "reference_enclave",
    },
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
