"""``--expect VSA``: a signed SLSA VSA (signing engineer's API) gives the expected PCRs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from enclave_audit.errors import InvalidInput, PolicyNotMet
from enclave_audit.model.attestation import ResourceDescriptor, vsa_statement
from enclave_audit.model.findings import Verdict
from reference_enclave import demo
from reference_enclave.client import ask, load_expectation
from tests.reference_enclave.runtime.stack import Stack
from verifier.attest.keys import KeyType, generate_key_pair
from verifier.attest.signing import KeySigner, sign_statement
from verifier.nitro import TrustRoot


def _vsa(stack: Stack, tmp: Path, verdict: Verdict = Verdict.PASS) -> tuple[Path, Path]:
    keys = generate_key_pair(KeyType.ECDSA_P256, tmp / "auditor")
    statement = vsa_statement(
        subjects=[ResourceDescriptor(name="enclave.eif", digest={"sha256": "ab" * 32})],
        resource_uri="file:enclave.eif",
        policy_uri="file:policy.json",
        policy_digest=None,
        verdict=verdict,
        pcrs=stack.image_pcrs,
    )
    bundle = sign_statement(statement, KeySigner.from_path(keys.private))
    path = tmp / "vsa.bundle.json"
    path.write_bytes(bundle.bundle)
    return path, keys.public


def test_a_verified_vsa_is_the_expectation(stack: Stack, tmp_path: Path) -> None:
    vsa, key = _vsa(stack, tmp_path)
    expectation = load_expectation(vsa, vsa_keys=[key], model_sha256=stack.model.sha256)
    assert expectation.pcrs == demo.expected_measurements(stack.image_pcrs, stack.model.sha256)
    result = ask(
        stack.enclave.url,
        "hi",
        expectation=expectation,
        roots=[TrustRoot.from_pem(stack.ca.root_pem(), name="sim")],
        max_tokens=2,
    )
    assert result.tokens >= 1


def test_vsa_needs_the_signer_and_the_model(stack: Stack, tmp_path: Path) -> None:
    vsa, _ = _vsa(stack, tmp_path)
    with pytest.raises(InvalidInput, match="--vsa-key"):
        load_expectation(vsa)
    other = generate_key_pair(KeyType.ED25519, tmp_path / "someone-else")
    with pytest.raises(PolicyNotMet):
        load_expectation(vsa, vsa_keys=[other.public], model_sha256=hashlib.sha256().digest())


def test_a_failed_vsa_is_not_an_expectation(stack: Stack, tmp_path: Path) -> None:
    vsa, key = _vsa(stack, tmp_path, Verdict.FAIL)
    with pytest.raises(PolicyNotMet, match="verificationResult"):
        load_expectation(vsa, vsa_keys=[key], model_sha256=stack.model.sha256)
