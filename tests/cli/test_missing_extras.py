"""A verb whose optional dependency is not installed says which extra brings it (exit 5).

The core install (``pip install enclave-audit``) gives the verify-only verbs; the demo,
the gate's ``--apply``, ``model encrypt --kms`` and the builders need extras.  Without
them the user gets one error line naming the package and a hint line naming the extra,
never ``internal error: ModuleNotFoundError`` (exit 70), and the demo refuses before it
spends minutes building the image.  The packages are hidden from a real console process
by a ``None`` entry in ``sys.modules`` (what a missing package looks like to ``import``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCK = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None\n"
    "from enclave_audit.cli import main\n"
    "main(sys.argv[2:])\n"
)


def _run(hidden: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK, hidden, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_without_the_runtime_extra_refuses_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    r = _run("boto3,botocore", "demo", "-o", str(out))
    assert r.returncode == 5, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: "), r.stderr
    assert "boto3" in lines[0] and "[runtime] extra" in lines[0]
    assert lines[1].startswith("hint: ") and "enclave-audit[runtime]" in lines[1]
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert not out.exists()  # nothing built, nothing written


def test_demo_json_failure_is_an_error_document(tmp_path: Path) -> None:
    import json

    r = _run("numpy", "demo", "-o", str(tmp_path / "o"), "--json")
    assert r.returncode == 5
    doc = json.loads(r.stdout)
    assert doc["schema"] == "enclave-audit/error" and doc["exit_code"] == 5
    assert doc["error"]["class"] == "EnvironmentProblem" and "numpy" in doc["error"]["message"]


def test_a_verb_that_imports_a_missing_extra_late_names_it(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    r = _run(
        "boto3",
        "model", "encrypt", str(model), "-o", str(tmp_path / "m.cimf"),
        "--kms", "http://127.0.0.1:9", "--key-id", "alias/models",
    )  # fmt: skip
    assert r.returncode == 5, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("error: ") and "'boto3'" in first and "[runtime] extra" in first
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.cimf").exists()


def test_a_missing_module_that_is_no_extra_is_still_an_internal_error() -> None:
    # only the declared optional dependencies get the install hint; a missing core
    # module is a broken installation, reported as such
    r = _run("rich", "describe-eif", "/nonexistent.eif")
    assert r.returncode == 70, r.stderr
    assert r.stderr.startswith("error: internal error: ModuleNotFoundError")
    assert "extra" not in r.stderr and "Traceback" not in r.stderr
