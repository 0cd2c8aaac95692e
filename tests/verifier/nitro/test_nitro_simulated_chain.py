"""Chains rooted at a --root CA: the AWS rules (profile, pathLen, keyUsage, validity, cache)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from nitro_sim import (
    BASE_TIME,
    CertSpec,
    SimPki,
    build_pki,
    default_fields,
    issue,
    sign_document,
)

from enclave_audit.errors import (
    AttestationChainInvalid,
    AttestationExpired,
    AttestationSignatureInvalid,
    AttestationUnsigned,
    InvalidInput,
    TrustError,
)
from enclave_audit.model.findings import CheckOutcome, Verdict
from verifier.nitro import ChainCache, TrustRoot, require_pass, verify_attestation


def _verify(pki: SimPki, doc: bytes, cache: ChainCache | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return verify_attestation(
        doc,
        roots=[pki.trust_root],
        at=BASE_TIME,
        chain_cache=ChainCache(0) if cache is None else cache,
        **kw,  # type: ignore[arg-type]
    )


def test_simulation_root_document_passes_and_names_its_root(
    sim_pki: SimPki, sim_document: bytes
) -> None:
    result = _verify(sim_pki, sim_document)
    assert result.verdict is Verdict.PASS, result.summary()
    assert result.root_name == "test simulation root"
    assert result.root_sha256 == sim_pki.trust_root.sha256
    assert len(result.chain) == 4


def test_simulation_document_fails_against_the_default_aws_root(sim_document: bytes) -> None:
    result = verify_attestation(sim_document, at=BASE_TIME)
    assert result.verdict is Verdict.FAIL
    assert "not a trusted root" in result.check("chain.root").detail  # type: ignore[union-attr]


def test_several_roots_the_matching_one_is_named(sim_pki: SimPki, sim_document: bytes) -> None:
    other = build_pki()
    result = verify_attestation(
        sim_document, roots=[other.trust_root, sim_pki.trust_root], at=BASE_TIME
    )
    assert result.verdict is Verdict.PASS
    assert result.root_sha256 == sim_pki.trust_root.sha256


def test_tagged_and_indefinite_documents(sim_pki: SimPki) -> None:
    fields = default_fields(sim_pki)
    for tagged, indefinite in ((True, False), (False, True), (True, True)):
        doc = sign_document(sim_pki.leaf.key, fields, tagged=tagged, indefinite=indefinite)
        result = _verify(sim_pki, doc)
        assert result.verdict is Verdict.PASS, (tagged, indefinite, result.summary())
        detail = result.check("document.structure").detail  # type: ignore[union-attr]
        assert ("indefinite" in detail) == indefinite
        assert detail.startswith("tagged" if tagged else "untagged")


def _leaf(**kw: object) -> CertSpec:
    spec = CertSpec(
        "leaf",
        ca=False,
        not_before=BASE_TIME - timedelta(minutes=1),
        not_after=BASE_TIME + timedelta(hours=3),
    )
    for key, value in kw.items():
        setattr(spec, key, value)
    return spec


PROFILE_VIOLATIONS = {
    "leaf is a CA": ({"leaf": _leaf(ca=True, path_length=None)}, "leaf certificate is a CA"),
    "leaf without digitalSignature": (
        {"leaf": _leaf(digital_signature=False)},
        "digitalSignature",
    ),
    "intermediate without keyCertSign": (
        {"intermediates": [CertSpec("i1", ca=True, path_length=1, key_cert_sign=False)]},
        "keyCertSign",
    ),
    "intermediate not a CA": (
        {"intermediates": [CertSpec("i1", ca=False)]},
        "basicConstraints CA=true",
    ),
    "intermediate basicConstraints not critical": (
        {"intermediates": [CertSpec("i1", ca=True, bc_critical=False)]},
        "not critical",
    ),
    "pathLen 0 with a CA below it": (
        {
            "intermediates": [
                CertSpec("i1", ca=True, path_length=0),
                CertSpec("i2", ca=True, path_length=0),
            ]
        },
        "pathLenConstraint 0",
    ),
    "leaf on P-256": ({"leaf": _leaf(curve=ec.SECP256R1())}, "P-384"),
    "intermediate signed with SHA-256": (
        {"intermediates": [CertSpec("i1", ca=True, hash=hashes.SHA256())]},
        "ecdsa-with-SHA384",
    ),
    "unknown critical extension": (
        {"leaf": _leaf(critical_unknown=True)},
        "unsupported critical extension",
    ),
}


@pytest.mark.parametrize("case", list(PROFILE_VIOLATIONS), ids=list(PROFILE_VIOLATIONS))
def test_profile_violations_fail_the_chain(case: str) -> None:
    kwargs, needle = PROFILE_VIOLATIONS[case]
    pki = build_pki(**kwargs)  # type: ignore[arg-type]
    doc = sign_document(pki.leaf.key, default_fields(pki))
    result = _verify(pki, doc)
    assert result.verdict is Verdict.FAIL
    profile = result.check("chain.profile")
    assert profile is not None and profile.outcome is CheckOutcome.FAIL
    assert needle in profile.detail, profile.detail
    with pytest.raises(AttestationChainInvalid):
        require_pass(result)


def test_pathlen_exactly_at_the_limit_passes() -> None:
    pki = build_pki(
        intermediates=[
            CertSpec("i1", ca=True, path_length=2),
            CertSpec("i2", ca=True, path_length=1),
            CertSpec("i3", ca=True, path_length=0),
        ]
    )
    result = _verify(pki, sign_document(pki.leaf.key, default_fields(pki)))
    assert result.verdict is Verdict.PASS, result.summary()


def test_leaf_issued_by_another_ca_fails_signatures(sim_pki: SimPki) -> None:
    stranger = build_pki()
    # same subject/issuer names, but the leaf was signed by a different instance CA
    fields = default_fields(sim_pki, certificate=stranger.leaf.der)
    result = _verify(sim_pki, sign_document(stranger.leaf.key, fields))
    assert result.check("chain.signatures").outcome is CheckOutcome.FAIL  # type: ignore[union-attr]


def test_wrong_signing_key_fails_cose_signature(sim_pki: SimPki) -> None:
    other_key = ec.generate_private_key(ec.SECP384R1())
    result = _verify(sim_pki, sign_document(other_key, default_fields(sim_pki)))
    assert [c.name for c in result.failed()] == ["cose.signature"]
    with pytest.raises(AttestationSignatureInvalid):
        require_pass(result)


def test_expired_intermediate_is_reported_even_from_cache(
    sim_pki: SimPki, sim_document: bytes
) -> None:
    cache = ChainCache()
    assert _verify(sim_pki, sim_document, cache).verdict is Verdict.PASS
    assert cache.misses == 1 and len(cache) == 1
    late = BASE_TIME + timedelta(days=2)  # intermediates expire after one day
    result = verify_attestation(
        sim_document, roots=[sim_pki.trust_root], at=late, chain_cache=cache
    )
    assert cache.hits == 1
    validity = result.check("chain.validity")
    assert (
        validity is not None and "sim regional" in validity.detail and "expired" in validity.detail
    )
    with pytest.raises(AttestationExpired):
        require_pass(result)


def test_cache_never_skips_the_leaf(sim_pki: SimPki, sim_document: bytes) -> None:
    cache = ChainCache()
    assert _verify(sim_pki, sim_document, cache).verdict is Verdict.PASS
    # a new leaf under the same cached intermediates, but not issued by the instance CA
    rogue = issue(_leaf(), None)
    rogue_doc = sign_document(rogue.key, default_fields(sim_pki, certificate=rogue.der))
    result = _verify(sim_pki, rogue_doc, cache)
    assert cache.hits == 1
    assert result.check("chain.signatures").outcome is CheckOutcome.FAIL  # type: ignore[union-attr]
    assert "from cache" in result.check("chain.profile").detail  # type: ignore[union-attr]
    # a tampered signature with a cache hit still fails
    tampered = bytearray(sim_document)
    tampered[-5] ^= 1
    assert _verify(sim_pki, bytes(tampered), cache).failed()[0].name == "cose.signature"


def test_cache_is_keyed_by_root_too(sim_pki: SimPki, sim_document: bytes) -> None:
    cache = ChainCache()
    assert _verify(sim_pki, sim_document, cache).verdict is Verdict.PASS
    other = build_pki()
    result = verify_attestation(
        sim_document, roots=[other.trust_root], at=BASE_TIME, chain_cache=cache
    )
    assert result.verdict is Verdict.FAIL
    assert len(cache) == 1


def test_failed_chains_are_not_cached() -> None:
    pki = build_pki(intermediates=[CertSpec("i1", ca=True, key_cert_sign=False)])
    cache = ChainCache()
    doc = sign_document(pki.leaf.key, default_fields(pki))
    for _ in range(2):
        assert _verify(pki, doc, cache).verdict is Verdict.FAIL
    assert len(cache) == 0 and cache.hits == 0


def test_cache_is_bounded(sim_pki: SimPki) -> None:
    cache = ChainCache(maxsize=2)
    for _ in range(3):
        pki = build_pki()
        assert (
            _verify(pki, sign_document(pki.leaf.key, default_fields(pki)), cache).verdict
            is Verdict.PASS
        )
    assert len(cache) == 2


def test_root_loading_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pki = build_pki()
    pem = tmp_path / "root.pem"
    pem.write_bytes(pki.root.pem)
    assert TrustRoot.from_file(pem).sha256 == pki.trust_root.sha256
    with pytest.raises(TrustError, match="fingerprint"):
        TrustRoot.from_pem(pki.root.pem, name="x", expected_sha256="00" * 32)
    with pytest.raises(TrustError, match="cannot anchor"):
        TrustRoot.from_pem(pki.leaf.pem, name="leaf as root")
    with pytest.raises(InvalidInput, match="one certificate"):
        TrustRoot.from_pem(pki.root.pem + pki.leaf.pem, name="two")
    with pytest.raises(InvalidInput):
        TrustRoot.from_pem(b"not a pem", name="junk")


QEMU_PLACEHOLDER = bytes(64)


def _qemu_document() -> bytes:
    """What QEMU's virtio-nsm returns: protected {1: -1}, zero signature/certificate/cabundle."""
    import cbor2

    payload = cbor2.dumps(
        {
            "module_id": "i-234-enc5678",
            "digest": "SHA384",
            "timestamp": int(BASE_TIME.timestamp()) * 1000,
            "pcrs": {i: bytes(48) if i > 2 else bytes([7]) * 48 for i in range(16)},
            "certificate": QEMU_PLACEHOLDER,
            "cabundle": [QEMU_PLACEHOLDER],
            "public_key": None,
            "user_data": None,
            "nonce": b"n",
        }
    )
    return cbor2.dumps([b"\xa1\x01\x20", {}, payload, QEMU_PLACEHOLDER])


def test_unsigned_emulator_documents_are_refused_by_default() -> None:
    with pytest.raises(AttestationUnsigned, match="unsigned emulator"):
        verify_attestation(_qemu_document(), at=BASE_TIME)


def test_unsigned_emulator_mode_says_what_was_not_checked() -> None:
    result = verify_attestation(_qemu_document(), at=BASE_TIME, unsigned_emulator=True, nonce=b"n")
    assert result.insecure_unsigned
    assert result.root_sha256 is None
    skipped = {c.name for c in result.checks if c.outcome is CheckOutcome.SKIPPED}
    assert {"cose.signature", "chain.root", "chain.signatures", "chain.validity"} <= skipped
    assert all(
        "unsigned emulator" in c.detail
        for c in result.checks
        if c.name.startswith(("chain.", "cose."))
    )
    assert result.check("policy.nonce").outcome is CheckOutcome.PASS  # type: ignore[union-attr]
