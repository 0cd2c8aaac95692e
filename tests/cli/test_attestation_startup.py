"""The one-document ``attestation verify`` process imports nothing heavy (issue 17, start-up).

Relying parties run the verifier once per document from scripts, so the process start
counts; bench/startup.py measures it against ``python -c pass``.  This test guards the
cause rather than the time: it runs the real console script under
``PYTHONPROFILEIMPORTTIME=1`` (the interpreter lists every module it imports on stderr)
and requires that none of the heavy packages (pydantic, rich, boto3, numpy, lief,
docker, ...) is among them, on the passing path, the failing paths (expired chain, a
malformed document, a policy failure, a missing file, a usage error), with ``--json``,
from standard input, and for ``attestation show``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import CliResult, run_cli, shared_fixture

NITRO = shared_fixture("nitro")
PROD = NITRO / "attestation" / "base-nitro-validator_2024-11-30_prod.cbor"
DEBUG_B64 = NITRO / "attestation" / "blocky-nitrite_2024-09-07_debug.b64"
TRUNCATED = NITRO / "negative" / "base-nitro-validator_2026-01-03_truncated-as-published.b64"

#: top-level packages that must not be imported by a verify-only process
HEAVY = frozenset(
    {
        "pydantic",
        "pydantic_core",
        "rich",
        "boto3",
        "botocore",
        "numpy",
        "lief",
        "docker",
        "jinja2",
        "sigstore",
        "requests",
        "yaml",
        "elftools",
        "debian",
        "gguf",
    }
)

_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$")


def _run(args: list[str], *, stdin: bytes | None = None) -> tuple[CliResult, set[str], str]:
    """The CLI result, the modules the process imported, and its stderr without them."""
    result = run_cli(args, env={"PYTHONPROFILEIMPORTTIME": "1"}, input=stdin)
    modules: set[str] = set()
    other: list[str] = []
    for line in result.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            modules.add(match.group(1))
        elif not line.startswith("import time:"):
            other.append(line)
    assert "enclave_audit.cli" in modules, "no import list: PYTHONPROFILEIMPORTTIME ignored?"
    return result, modules, "\n".join(other)


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_verify_pass_imports_nothing_heavy() -> None:
    result, modules, stderr = _run(["attestation", "verify", str(PROD), "--at", "document"])
    assert result.exit_code == 0, stderr
    assert result.stdout.startswith("PASS i-0de38b2b6853cc9e8-enc0193685e7fee7d85\n")
    assert _heavy(modules) == []
    # the verifier and the crypto it needs did load: the guard sees a real import list
    assert {"verifier.nitro.verify", "verifier.nitro.chain", "cryptography.x509"} <= modules


def test_verify_json_from_stdin_imports_nothing_heavy() -> None:
    result, modules, stderr = _run(
        ["attestation", "verify", "-", "--at", "document", "--json"], stdin=PROD.read_bytes()
    )
    assert result.exit_code == 0, stderr
    doc = json.loads(result.stdout)  # run_cli validated it against the published schema
    assert doc["schema"] == "enclave-audit/nitro-attestation-result" and doc["verdict"] == "PASS"
    assert _heavy(modules) == []


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        # expired chain at the current time: the result document, then the error and a hint
        (["attestation", "verify", str(PROD), "--json"], 23, "add --at document"),
        # a malformed (truncated) document: the error document
        (["attestation", "verify", str(TRUNCATED), "--at", "document", "--json"], 20, "error:"),
        # a debug document without --allow-debug: a policy failure
        (["attestation", "verify", str(DEBUG_B64), "--at", "document", "--json"], 24, "debug"),
        # a missing file, and a usage error
        (["attestation", "verify", "/nonexistent/doc.cbor", "--json"], 6, "no such file"),
        (["attestation", "verify", str(PROD), "--nonce", "zz", "--json"], 3, "--nonce"),
        (["attestation", "verify", "--json"], 2, "Missing argument"),
    ],
)
def test_failing_verify_imports_nothing_heavy(args: list[str], code: int, needle: str) -> None:
    result, modules, stderr = _run(args)
    assert result.exit_code == code, stderr
    assert needle in stderr
    assert json.loads(result.stdout)["schema"].startswith("enclave-audit/")
    assert _heavy(modules) == []


def test_expect_and_show_import_nothing_heavy(tmp_path: Path) -> None:
    entry = next(
        e
        for e in json.loads((NITRO / "expected.json").read_text())["documents"]
        if e["file"].endswith(PROD.name)
    )
    expect = tmp_path / "measurements.json"
    expect.write_text(
        json.dumps({"Measurements": {f"PCR{i}": entry["pcrs"][str(i)] for i in (0, 1, 2)}})
    )
    args = ["attestation", "verify", str(PROD), "--at", "document", "--expect", str(expect)]
    result, modules, stderr = _run(args)
    assert result.exit_code == 0, stderr
    assert _heavy(modules) == []
    result, modules, stderr = _run(["attestation", "show", str(PROD), "--json"])
    assert result.exit_code == 0, stderr
    assert json.loads(result.stdout)["schema"] == "enclave-audit/nitro-attestation-document"
    assert _heavy(modules) == []
