"""``enclave-audit build`` / ``repro-test`` on bad input: one line, right code, no output left."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from conftest import ROOT, assert_one_line_error, run_cli

from builder.reference import REFERENCE_SPEC
from builder.spec import load_spec

SPEC_TEXT = REFERENCE_SPEC.read_text()


def _spec_copy(tmp_path: Path, text: str) -> Path:
    """The reference spec dir copied next to a copy of the real app packages (a symlinked
    package is refused: every spec path stays inside the source tree)."""
    src = tmp_path / "src"
    spec_dir = src / "reference_enclave"
    for sub in ("kernel", "init", "nsm-attest"):
        shutil.copytree(REFERENCE_SPEC.parent / sub, spec_dir / sub)
    shutil.copy(REFERENCE_SPEC.parent / "debian.lock", spec_dir / "debian.lock")
    (spec_dir / "__init__.py").write_text("")
    for package in load_spec(REFERENCE_SPEC).spec.app.packages:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    path = spec_dir / "enclave.toml"
    path.write_text(text)
    return path


def _build_args(spec: Path, out: Path) -> list[str]:
    return ["build", "--spec", str(spec), "--source-date-epoch", "1700000000", "-o", str(out)]


def test_help_has_example() -> None:
    for verb in ("build", "repro-test"):
        result = run_cli([verb, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.stdout and "enclave-audit" in result.stdout


def test_unreadable_spec(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(["build", "--spec", str(tmp_path / "nope.toml"), "-o", str(out)])
    assert_one_line_error(result, 30, "nope.toml")
    assert not out.exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = [")
    result = run_cli(["build", "--spec", str(bad), "-o", str(out)])
    assert_one_line_error(result, 30, "toml")
    assert not out.exists()


def test_pinned_version_unavailable(tmp_path: Path) -> None:
    spec = _spec_copy(
        tmp_path,
        SPEC_TEXT.replace('version = "6.12.117-1~deb12u1"', 'version = "6.12.1-99~gone"'),
    )
    out = tmp_path / "out"
    result = run_cli(
        _build_args(spec, out),
        env={"ENCLAVE_AUDIT_CACHE": str(tmp_path / "cache")},
    )
    assert_one_line_error(result, 31, "linux-source-6.12", "6.12.1-99~gone")
    assert not out.exists()


def test_digest_mismatch_in_cache(tmp_path: Path) -> None:
    loaded = load_spec(REFERENCE_SPEC)
    sha = loaded.spec.kernel.sha256
    cache = tmp_path / "cache"
    planted = cache / "inputs" / sha[:2] / sha  # the input store
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"not the pinned kernel source package")
    out = tmp_path / "out"
    result = run_cli(
        _build_args(REFERENCE_SPEC, out),
        env={"ENCLAVE_AUDIT_CACHE": str(cache)},
    )
    assert_one_line_error(result, 32, "sha256", sha)
    assert not out.exists()


def test_missing_tool_names_debian_package(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    out = tmp_path / "out"
    result = run_cli(
        _build_args(REFERENCE_SPEC, out),
        env={"PATH": str(bindir), "ENCLAVE_AUDIT_CACHE": str(tmp_path / "cache")},
    )
    assert_one_line_error(result, 5, "apt-get install")
    assert not out.exists()


def test_repro_test_needs_two_runs(tmp_path: Path) -> None:
    result = run_cli(["repro-test", "--runs", "1", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert not (tmp_path / "r").exists()
    assert os.path.exists(REFERENCE_SPEC)
