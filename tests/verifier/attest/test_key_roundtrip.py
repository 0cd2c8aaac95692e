"""Key-based signing round trips, tamper resistance, and sigstore-js as an independent verifier."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from enclave_audit.errors import (
    EnclaveAuditError,
    KeyFileError,
    PolicyNotMet,
    SignatureInvalid,
    SubjectMismatch,
)
from enclave_audit.model.attestation import (
    PROVENANCE_V1,
    VSA_V1,
    ResourceDescriptor,
    Statement,
    provenance_statement,
    vsa_statement,
)
from enclave_audit.model.digests import Digest
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import PcrSet
from verifier.attest.dsse import pae, parse_bundle
from verifier.attest.keys import (
    KeyType,
    generate_key_pair,
    load_private_key,
    load_public_key,
    ssh_fingerprint,
)
from verifier.attest.policy import AnyOf, KeyPolicy
from verifier.attest.signing import KeySigner, sign_statement, signer_for_uri
from verifier.attest.verify import check_vsa, digest_of_file, verify_bundle

PCRS = PcrSet(values={0: "11" * 48, 1: "22" * 48, 2: "33" * 48})


def provenance(a_txt: Path) -> Statement:
    return provenance_statement(
        subjects=[ResourceDescriptor.for_digest("a.txt", digest_of_file(a_txt))],
        builder_id="https://example.invalid/enclave-audit-builder",
        external_parameters={"manifest": "build-manifest.json"},
        pcrs=PCRS,
    )


def test_round_trip(keypair, a_txt: Path) -> None:  # type: ignore[no-untyped-def]
    statement = provenance(a_txt)
    signed = sign_statement(statement, signer_for_uri(f"file:{keypair.private}"))
    result = verify_bundle(
        signed.bundle,
        KeyPolicy([load_public_key(keypair.public)]),
        artifact_digest=digest_of_file(a_txt),
        predicate_type=PROVENANCE_V1,
    )
    assert result.payload_bytes == statement.to_bytes() == signed.payload
    assert result.statement == statement
    assert result.provenance().pcrs() == PCRS
    assert result.signer.key_fingerprint == ssh_fingerprint(load_public_key(keypair.public))
    assert result.signer.key_type == keypair.key_type.value
    bundle = json.loads(signed.bundle)
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": result.signer.key_hint},
        "tlogEntries": [],
    }
    assert bundle["dsseEnvelope"]["signatures"][0]["keyid"] == ""


def test_signature_is_over_pae(keypair, a_txt: Path) -> None:  # type: ignore[no-untyped-def]
    signed = sign_statement(provenance(a_txt), signer_for_uri(f"file:{keypair.private}"))
    envelope = parse_bundle(signed.bundle)
    sig = envelope.envelope.signatures[0].sig  # type: ignore[union-attr]
    public = load_public_key(keypair.public)
    message = pae("application/vnd.in-toto+json", signed.payload)
    if keypair.key_type is KeyType.ED25519:
        public.verify(sig, message)  # type: ignore[call-arg]
    else:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        assert sig[0] == 0x30  # DER
        public.verify(sig, message, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]


def test_every_flipped_bit_fails(keypair, a_txt: Path) -> None:  # type: ignore[no-untyped-def]
    signed = sign_statement(provenance(a_txt), signer_for_uri(f"file:{keypair.private}"))
    policy = KeyPolicy([load_public_key(keypair.public)])
    digest = digest_of_file(a_txt)
    raw = signed.bundle
    start = raw.index(b'"dsseEnvelope"')
    accepted = []
    for index in range(len(raw)):
        for bit in range(8):
            mutated = bytearray(raw)
            mutated[index] ^= 1 << bit
            try:
                verify_bundle(bytes(mutated), policy, artifact_digest=digest)
            except EnclaveAuditError:
                continue
            accepted.append((index, bit))
    assert accepted == [], f"accepted mutations at {accepted[:5]} (envelope starts at {start})"


def test_keyid_fingerprint_mode(keypair, a_txt: Path) -> None:  # type: ignore[no-untyped-def]
    signer = KeySigner(load_private_key(keypair.private), with_keyid=True)
    signed = sign_statement(provenance(a_txt), signer)
    public = load_public_key(keypair.public)
    keyid = json.loads(signed.bundle)["dsseEnvelope"]["signatures"][0]["keyid"]
    assert keyid == ssh_fingerprint(public) and keyid.startswith("SHA256:")
    verify_bundle(signed.bundle, KeyPolicy([public]), artifact_digest=digest_of_file(a_txt))


def test_wrong_key_and_tampered_subject(keypair, other_keypair, a_txt: Path) -> None:  # type: ignore[no-untyped-def]
    signed = sign_statement(provenance(a_txt), signer_for_uri(f"file:{keypair.private}"))
    other = load_public_key(other_keypair.public)
    mine = load_public_key(keypair.public)
    with pytest.raises(PolicyNotMet):
        verify_bundle(signed.bundle, KeyPolicy([other]), artifact_digest=digest_of_file(a_txt))
    # any-of with the right key passes
    verify_bundle(
        signed.bundle,
        AnyOf([KeyPolicy([other]), KeyPolicy([mine])]),
        artifact_digest=digest_of_file(a_txt),
    )
    with pytest.raises(SubjectMismatch):
        verify_bundle(
            signed.bundle, KeyPolicy([mine]), artifact_digest=Digest.parse("sha256:" + "00" * 32)
        )


def test_signature_from_other_key_with_forged_hint(keypair, other_keypair, a_txt: Path) -> None:  # type: ignore[no-untyped-def]
    """An envelope signed by another key but carrying our hint fails the signature check."""
    signed = sign_statement(provenance(a_txt), signer_for_uri(f"file:{other_keypair.private}"))
    mine = load_public_key(keypair.public)
    obj = json.loads(signed.bundle)
    obj["verificationMaterial"]["publicKey"]["hint"] = ""
    with pytest.raises(SignatureInvalid):
        verify_bundle(
            json.dumps(obj).encode(), KeyPolicy([mine]), artifact_digest=digest_of_file(a_txt)
        )


def test_vsa_round_trip_and_consumer_checks(keypair, a_txt: Path) -> None:  # type: ignore[no-untyped-def]
    statement = vsa_statement(
        subjects=[ResourceDescriptor.for_digest("a.txt", digest_of_file(a_txt))],
        resource_uri="file:a.txt",
        policy_uri="file:policy.json",
        policy_digest=digest_of_file(a_txt),
        verdict=Verdict.PASS,
        verified_levels=["SLSA_BUILD_LEVEL_2"],
        pcrs=PCRS,
        source_commit="0123456789abcdef0123456789abcdef01234567",
        rebuilds=3,
    )
    signed = sign_statement(statement, signer_for_uri(f"file:{keypair.private}"))
    result = verify_bundle(
        signed.bundle,
        KeyPolicy([load_public_key(keypair.public)]),
        artifact_digest=digest_of_file(a_txt),
        predicate_type=VSA_V1,
    )
    vsa = check_vsa(
        result,
        verifier_id="https://github.com/enclave-audit/enclave-audit/verifier/v1",
        resource_uri="file:a.txt",
        required_levels=("SLSA_BUILD_LEVEL_1",),
    )
    assert vsa.pcrs() == PCRS and vsa.rebuilds == 3 and vsa.verdict is Verdict.PASS
    with pytest.raises(PolicyNotMet):
        check_vsa(result, verifier_id="https://other.example/verifier")
    with pytest.raises(PolicyNotMet):
        check_vsa(result, verifier_id=vsa.verifier.id, required_levels=("SLSA_BUILD_LEVEL_3",))
    with pytest.raises(PolicyNotMet, match="predicateType"):
        verify_bundle(
            signed.bundle,
            KeyPolicy([load_public_key(keypair.public)]),
            artifact_digest=digest_of_file(a_txt),
            predicate_type=PROVENANCE_V1,
        )


def test_independent_verifier_sigstore_js(
    keypair, other_keypair, a_txt: Path, tmp_path: Path, sigstore_js
) -> None:  # type: ignore[no-untyped-def]
    statement = provenance(a_txt)
    signed = sign_statement(statement, signer_for_uri(f"file:{keypair.private}"))
    bundle = tmp_path / "b.sigstore.json"
    bundle.write_bytes(signed.bundle)
    proc = sigstore_js(bundle, keypair.public)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is True
    assert out["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(out["payload"]) == statement.to_bytes()
    # the other implementation also rejects a wrong key and a tampered payload
    wrong = sigstore_js(bundle, other_keypair.public)
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["ok"] is False
    obj = json.loads(signed.bundle)
    obj["dsseEnvelope"]["payload"] = base64.b64encode(
        statement.to_bytes().replace(b"a.txt", b"b.txt")
    ).decode()
    tampered = tmp_path / "t.sigstore.json"
    tampered.write_text(json.dumps(obj))
    bad = sigstore_js(tampered, keypair.public)
    assert bad.returncode == 1 and "signature" in json.loads(bad.stdout)["error"]


def test_private_key_mode_and_encryption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = generate_key_pair(KeyType.ED25519, tmp_path / "k", passphrase=b"correct horse")
    assert (files.private.stat().st_mode & 0o777) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in files.private.read_bytes()
    monkeypatch.delenv("ENCLAVE_AUDIT_KEY_PASSPHRASE", raising=False)
    with pytest.raises(KeyFileError, match="ENCLAVE_AUDIT_KEY_PASSPHRASE"):
        signer_for_uri(f"file:{files.private}")
    monkeypatch.setenv("ENCLAVE_AUDIT_KEY_PASSPHRASE", "wrong")
    with pytest.raises(KeyFileError, match="passphrase"):
        signer_for_uri(f"file:{files.private}")
    monkeypatch.setenv("ENCLAVE_AUDIT_KEY_PASSPHRASE", "correct horse")
    signer_for_uri(f"file:{files.private}")
    os.chmod(files.private, 0o644)
    with pytest.raises(KeyFileError, match="unsafe permissions 0644"):
        signer_for_uri(f"file:{files.private}")


def test_refuses_unsupported_keys(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    path = tmp_path / "p384.pub"
    path.write_bytes(
        p384.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="curve"):
        load_public_key(path)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    path.write_bytes(
        rsa_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="unsupported"):
        load_public_key(path)
    path.write_text("not a key")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(path)
