"""``enclave-audit attestation verify|show`` through the real console entry point."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import assert_one_line_error, run_cli, shared_fixture

from enclave_audit.errors import (
    AttestationChainInvalid,
    AttestationExpired,
    AttestationMalformed,
    AttestationPolicyFailed,
    InputNotFound,
    InvalidInput,
)

NITRO = shared_fixture("nitro")
EXPECTED = json.loads((NITRO / "expected.json").read_text())["documents"]


def _sim() -> ModuleType:
    """The test-only simulation PKI helper that lives with the verifier tests."""
    path = Path(__file__).resolve().parents[1] / "verifier" / "nitro" / "nitro_sim.py"
    spec = importlib.util.spec_from_file_location("nitro_sim_for_cli", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _entry(stem: str) -> dict[str, Any]:
    return next(e for e in EXPECTED if stem in e["file"])


def _path(entry: dict[str, Any]) -> str:
    return str(NITRO / entry["file"])


@pytest.mark.parametrize("entry", EXPECTED, ids=[Path(e["file"]).stem for e in EXPECTED])
def test_verify_json_reproduces_expected_values(entry: dict[str, Any]) -> None:
    result = run_cli(
        ["attestation", "verify", _path(entry), "--at", "document", "--allow-debug", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "PASS"
    assert data["module_id"] == entry["module_id"]
    assert data["digest"] == "SHA384"
    assert data["timestamp"] == entry["timestamp_utc"].replace("000Z", "Z")
    assert data["pcrs"] == entry["pcrs"]
    assert data["root_sha256"] == "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    for name in ("public_key", "user_data", "nonce"):
        want = entry[name]
        if want is None:
            assert data[name] is None
        elif "hex" in want:
            assert data[name] == want["hex"]
        else:
            assert len(data[name]) == 2 * want["len"]
    outcomes = {c["name"]: c["outcome"] for c in data["checks"]}
    assert outcomes["cose.signature"] == outcomes["chain.validity"] == "pass"


def test_verify_now_fails_with_expired_leaf() -> None:
    result = run_cli(["attestation", "verify", _path(_entry("base-nitro-validator_2024"))])
    assert_one_line_error(result, AttestationExpired.exit_code, "expired", "leaf")
    assert "FAIL" in result.stdout


def test_verify_now_json_still_prints_the_result() -> None:
    result = run_cli(["attestation", "verify", _path(_entry("evervault_2022-10-13")), "--json"])
    assert result.exit_code == AttestationExpired.exit_code
    data = json.loads(result.stdout)
    assert data["verdict"] == "FAIL" and data["time_source"] == "now"


def test_debug_document_refused_without_allow_debug() -> None:
    result = run_cli(
        [
            "attestation",
            "verify",
            _path(_entry("blocky-nitrite_2024-09-07_debug")),
            "--at",
            "document",
        ]
    )
    assert_one_line_error(result, AttestationPolicyFailed.exit_code, "debug", "--allow-debug")


def test_expect_and_nonce(tmp_path: Path) -> None:
    entry = _entry("evervault_2022-10-13")
    measurements = tmp_path / "measurements.json"
    measurements.write_text(
        json.dumps(
            {
                "Measurements": {
                    "HashAlgorithm": "Sha384 { ... }",
                    **{f"PCR{i}": entry["pcrs"][str(i)] for i in (0, 1, 2, 8)},
                }
            }
        )
    )
    ok = run_cli(
        [
            "attestation",
            "verify",
            _path(entry),
            "--at",
            "document",
            "--expect",
            str(measurements),
            "--nonce",
            entry["nonce"]["hex"],
        ]
    )
    assert ok.exit_code == 0, ok.stderr
    bad = run_cli(["attestation", "verify", _path(entry), "--at", "document", "--nonce", "00ff"])
    assert_one_line_error(bad, AttestationPolicyFailed.exit_code, "nonce")
    stale = run_cli(["attestation", "verify", _path(entry), "--at", "document", "--max-age", "300"])
    assert_one_line_error(stale, AttestationPolicyFailed.exit_code, "max_age")


def test_explicit_iso_time() -> None:
    entry = _entry("blocky-nitrite_2024-09-07_prod")
    ok = run_cli(["attestation", "verify", _path(entry), "--at", "2024-09-07T15:00:00Z"])
    assert ok.exit_code == 0, ok.stderr
    bad = run_cli(["attestation", "verify", _path(entry), "--at", "yesterday"])
    assert_one_line_error(bad, InvalidInput.exit_code, "--at")


def test_negative_fixtures_are_malformed() -> None:
    for name in (
        "base-nitro-validator_2026-01-03_truncated-as-published.b64",
        "blocky-nitrite_selfsigned_synthetic.b64",
    ):
        result = run_cli(
            ["attestation", "verify", str(NITRO / "negative" / name), "--at", "document"]
        )
        assert_one_line_error(result, AttestationMalformed.exit_code, "COSE_Sign1")


def test_missing_and_garbage_input(tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli(["attestation", "verify", str(tmp_path / "nope.cbor")]),
        InputNotFound.exit_code,
        "nope.cbor",
    )
    junk = tmp_path / "junk.txt"
    junk.write_text("this is not an attestation document")
    assert_one_line_error(
        run_cli(["attestation", "show", str(junk)]), AttestationMalformed.exit_code
    )


def test_show_does_not_judge_an_expired_debug_document() -> None:
    entry = _entry("evervault_2022-10-12_debug")
    result = run_cli(["attestation", "show", _path(entry), "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"].startswith("enclave-audit/nitro-attestation-document")
    assert data["module_id"] == entry["module_id"] and data["pcrs"] == entry["pcrs"]
    assert data["public_key"] == entry["public_key"]["hex"]
    assert base64.b64decode(data["cabundle"][0])[:2] == b"\x30\x82"
    human = run_cli(["attestation", "show", _path(entry)])
    assert (
        human.exit_code == 0
        and entry["module_id"] in human.stdout
        and "not verified" in human.stdout
    )


def test_simulation_root(tmp_path: Path) -> None:
    sim = _sim()
    pki = sim.build_pki()
    doc = tmp_path / "sim.b64"
    doc.write_bytes(base64.b64encode(sim.sign_document(pki.leaf.key, sim.default_fields(pki))))
    root = tmp_path / "sim-root.pem"
    root.write_bytes(pki.root.pem)
    at = sim.BASE_TIME.isoformat()
    ok = run_cli(["attestation", "verify", str(doc), "--root", str(root), "--at", at, "--json"])
    assert ok.exit_code == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["root_name"] == str(root) and data["root_sha256"] != data["pcrs"]["0"]
    default = run_cli(["attestation", "verify", str(doc), "--at", at])
    assert_one_line_error(default, AttestationChainInvalid.exit_code, "not a trusted root")


def test_help_has_an_example() -> None:
    for verb in ("verify", "show"):
        result = run_cli(["attestation", verb, "--help"])
        assert result.exit_code == 0
        assert f"enclave-audit attestation {verb}" in result.stdout
