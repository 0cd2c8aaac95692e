"""``enclave-audit enclave sim-ca`` and ``enclave self-test``."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from reference_enclave.nsm.sim_ca import SimulationCa
from tests.conftest import assert_one_line_error, run_cli


def test_sim_ca_writes_a_loadable_ca(tmp_path: Path) -> None:
    result = run_cli(["enclave", "sim-ca", "-o", str(tmp_path / "ca"), "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    ca = SimulationCa.load(tmp_path / "ca")
    assert ca.root.fingerprint(hashes.SHA256()).hex() == info["root_sha256"]
    assert (tmp_path / "ca" / "intermediate.key.pem").stat().st_mode & 0o777 == 0o600


def test_self_test_passes_on_the_host() -> None:
    result = run_cli(["enclave", "self-test"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "self-test: passed" in result.stdout
    assert "ok   hpke rfc9180" in result.stdout


def test_run_needs_its_services(tmp_path: Path) -> None:
    image = tmp_path / "x.eif"
    image.write_bytes(b"not an eif")
    result = run_cli(["enclave", "run", str(image)])
    assert_one_line_error(result, 3, "--kms")
