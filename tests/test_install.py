"""A relying party's install: a fresh virtualenv, no root, ``pip install .``, verify a document.

The project is copied to a directory the unprivileged user owns (as a downloaded
release would be), a virtualenv is made with Debian's python3 by that user, the
project is installed with plain ``pip install .`` (no extras), and
``enclave-audit attestation verify`` judges a real Nitro document.  The light install
must not bring the build and runtime dependencies (Docker SDK, boto3, NumPy, gguf).
When the suite runs as root the test drops to ``nobody`` with setpriv; otherwise it
runs as the current user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, need, shared_fixture

NOBODY = 65534


def _as_user(
    cmd: list[str], *, home: Path, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
    }
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        need(setpriv is not None, "setpriv (util-linux) to drop root")
        assert setpriv is not None
        prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    return subprocess.run(
        [*prefix, *cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_pip_install_as_a_user_then_verify_a_document() -> None:
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    need(python is not None, "a system python3 (apt-get install python3 python3-venv)")
    assert python is not None
    doc = shared_fixture("nitro", "attestation", "base-nitro-validator_2024-11-30_prod.cbor")
    work = Path(tempfile.mkdtemp(prefix="enclave-audit-install-"))
    try:
        source, home = work / "enclave-audit", work / "home"
        files = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            capture_output=True, check=True,
        ).stdout.decode().split("\0")  # fmt: skip
        for name in filter(None, files):
            src = ROOT / name
            if src.is_file() and not name.startswith(("tests/", "bench/", "fuzz/")):
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, source / name)
        home.mkdir()
        (work / "doc.cbor").write_bytes(doc.read_bytes())
        if os.geteuid() == 0:
            for path in (work, *work.rglob("*")):
                os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        venv = work / "venv"
        made = _as_user([python, "-m", "venv", str(venv)], home=home, cwd=work, timeout=300)
        assert made.returncode == 0, made.stderr
        installed = _as_user(
            [str(venv / "bin" / "pip"), "install", "-q", "."], home=home, cwd=source, timeout=1800
        )
        assert installed.returncode == 0, installed.stderr[-3000:]
        verified = _as_user(
            [str(venv / "bin" / "enclave-audit"), "attestation", "verify", str(work / "doc.cbor"),
             "--at", "document", "--json"],
            home=home, cwd=work, timeout=120,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr
        assert '"verdict": "PASS"' in verified.stdout
        listed = _as_user([str(venv / "bin" / "pip"), "list"], home=home, cwd=work, timeout=120)
        names = {line.split()[0].lower() for line in listed.stdout.splitlines()[2:] if line}
        assert "enclave-audit" in names
        assert not names & {"boto3", "docker", "numpy", "gguf"}, names & {"boto3", "docker"}
        # the other verify-only verbs load with the light install
        for verb in ("attest", "describe-eif", "pcr", "diff", "audit", "report"):
            shown = _as_user(
                [str(venv / "bin" / "enclave-audit"), verb, "--help"], home=home, cwd=work,
                timeout=120,
            )  # fmt: skip
            assert shown.returncode == 0, (verb, shown.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
