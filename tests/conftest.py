"""Shared test helpers: read-only fixtures from ../shared, tool requirements, the CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

# the audit's security-updates check reads a live index: tests that want it say so, the
# others stay independent of what Debian published today
os.environ.setdefault("ENCLAVE_AUDIT_SECURITY_UPDATES", "off")

ROOT = Path(__file__).resolve().parent.parent
SHARED = (ROOT.parent / "shared").resolve()
IN_CI = bool(os.environ.get("CI"))


def shared_fixture(*parts: str) -> Path:
    """Path of a file under ../shared/fixtures (read-only; never copied)."""
    path = SHARED.joinpath("fixtures", *parts)
    if not path.exists():
        pytest.fail(f"shared fixture missing: {path}")
    return path


def need(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI, when a required tool or service is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required for this test and missing in CI: {reason}")
    print(f"SKIP: {reason}", file=sys.stderr)
    pytest.skip(reason)


def need_tool(tool: str, package: str | None = None) -> str:
    path = shutil.which(tool)
    need(path is not None, f"'{tool}' not installed (apt-get install {package or tool})")
    assert path is not None
    return path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 600,
) -> CliResult:
    """Run the real console entry point in a subprocess (as a user would)."""
    exe = Path(sys.executable).with_name("enclave-audit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "enclave_audit"]
    full_env = dict(os.environ)
    full_env.pop("ENCLAVE_AUDIT_DEBUG", None)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    result = CliResult(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
    check_json_output(args, result)
    return result


def _schema_validator(name: str):  # type: ignore[no-untyped-def]
    import json as _json

    from jsonschema import Draft202012Validator

    path = ROOT / "docs" / "schemas" / name
    assert path.exists(), f"no published JSON Schema {path.name} for a JSON output"
    return Draft202012Validator(_json.loads(path.read_text()))


def json_schema_for(doc: object) -> str | None:
    """The docs/schemas file a JSON document of the CLI must validate against (None: a
    peer format with its own published schema, checked by its own tests)."""
    if not isinstance(doc, dict):
        return "not-an-object"
    label = doc.get("schema")
    if isinstance(label, str) and label.startswith("enclave-audit/"):
        return f"{label.removeprefix('enclave-audit/')}.v{doc.get('schema_version')}.schema.json"
    if "EifVersion" in doc:
        return "nitro-describe-eif.schema.json"
    if set(doc) == {"Measurements"}:
        return "nitro-measurements.schema.json"
    if doc.get("version") == "2.1.0" and "runs" in doc:
        return None  # SARIF: tests/cli/test_audit_cli.py validates with the OASIS schema
    if "spdxVersion" in doc or doc.get("bomFormat") == "CycloneDX" or "Statement" in doc:
        return None  # SPDX, CycloneDX (their validators), an AWS key policy
    return "unlabelled"


def check_json_output(args: Sequence[str], result: CliResult) -> None:
    """Every JSON document the CLI prints validates against its published schema.

    Runs for every CLI run in the suite: with --json stdout must be one JSON document
    (also on failure: then an enclave-audit/error document); without it, stdout that is
    a JSON object (--format json, measurements) is checked the same way.
    """
    import json as _json

    text = result.stdout.strip()
    wants_json = "--json" in args
    if not text.startswith("{"):
        assert not wants_json or not text or result.exit_code == 2 or "--help" in args, (
            f"--json printed no JSON document: {text[:300]!r}"
        )
        return
    try:
        doc = _json.loads(text)
    except ValueError:
        assert not wants_json, f"--json printed invalid JSON: {text[:300]!r}"
        return
    name = json_schema_for(doc)
    if name is None:
        return
    assert name not in ("unlabelled", "not-an-object"), (
        f"JSON output without the schema/schema_version label: {text[:300]!r}"
    )
    errors = sorted(_schema_validator(name).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, f"{name}: {errors[0].message} at {list(errors[0].path)}"


def assert_one_line_error(result: CliResult, code: int, *needles: str) -> None:
    """A bad-input run: the expected exit code, one error line, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])


@pytest.fixture(scope="session")
def nitro_fixtures() -> Path:
    return shared_fixture("nitro")


@pytest.fixture(scope="session")
def sigstore_fixtures() -> Path:
    return shared_fixture("sigstore")
