"""Parsing: the negative fixtures, every field's type and size, strict CBOR, the COSE envelope."""

from __future__ import annotations

import base64
from typing import Any

import cbor2
import pytest
from nitro_sim import BASE_TIME, FIXTURES, SimPki, default_fields, sign_document

from enclave_audit.cose import sig_structure
from enclave_audit.errors import AttestationMalformed
from enclave_audit.model.findings import CheckOutcome, Verdict
from enclave_runtime.cbor import encode_head
from verifier.nitro import ChainCache, parse_attestation, unwrap_transport, verify_attestation


def _negative(name: str) -> bytes:
    return (FIXTURES / "negative" / name).read_bytes()


def test_truncated_published_document_is_malformed() -> None:
    text = _negative("base-nitro-validator_2026-01-03_truncated-as-published.b64")
    raw = unwrap_transport(text)
    with pytest.raises(AttestationMalformed, match=r"COSE_Sign1|attestation payload"):
        parse_attestation(raw)
    with pytest.raises(AttestationMalformed):
        verify_attestation(raw, at="document")
    # an independent decoder agrees that the bytes are not well-formed CBOR
    with pytest.raises(cbor2.CBORDecodeError):
        cbor2.loads(raw)


def test_selfsigned_synthetic_document_is_rejected_for_its_defects() -> None:
    raw = base64.b64decode(_negative("blocky-nitrite_selfsigned_synthetic.b64"))
    with pytest.raises(AttestationMalformed, match="unprotected header"):
        parse_attestation(raw)
    protected, _, payload, signature = cbor2.loads(raw)
    # with a well-formed envelope, the null cabundle is the defect
    repaired = cbor2.dumps([protected, {}, payload, signature])
    with pytest.raises(AttestationMalformed, match="cabundle"):
        parse_attestation(repaired)
    # and with a cabundle of its own self-signed certificate, there is no chain to the AWS root
    fields = cbor2.loads(payload)
    fields["cabundle"] = [fields["certificate"]]
    forged = cbor2.dumps([protected, {}, cbor2.dumps(fields), signature])
    result = verify_attestation(forged, at="document")
    assert result.verdict is Verdict.FAIL
    assert result.check("chain.root").outcome is CheckOutcome.FAIL  # type: ignore[union-attr]


def _doc(pki: SimPki, **overrides: Any) -> bytes:
    return sign_document(pki.leaf.key, default_fields(pki, **overrides))


MALFORMED_FIELDS = {
    "module_id empty": ({"module_id": ""}, "module_id"),
    "module_id bytes": ({"module_id": b"i-1"}, "module_id"),
    "digest SHA256": ({"digest": "SHA256"}, "digest"),
    "timestamp zero": ({"timestamp": 0}, "timestamp"),
    "timestamp text": ({"timestamp": "2024"}, "timestamp"),
    "timestamp huge": ({"timestamp": 2**63}, "timestamp"),
    "pcrs empty": ({"pcrs": {}}, "pcrs"),
    "pcrs 33 entries": ({"pcrs": {i: bytes(48) for i in range(33)}}, "pcrs"),
    "pcr index 32": ({"pcrs": {0: bytes(48), 32: bytes(48)}}, "PCR index"),
    "pcr index text": ({"pcrs": {"0": bytes(48)}}, "PCR index"),
    "pcr 47 bytes": ({"pcrs": {0: bytes(47)}}, "PCR0"),
    "certificate empty": ({"certificate": b""}, "certificate"),
    "certificate 1025 bytes": ({"certificate": bytes(1025)}, "certificate"),
    "cabundle empty": ({"cabundle": []}, "cabundle"),
    "cabundle null": ({"cabundle": None}, "cabundle"),
    "cabundle entry text": ({"cabundle": ["x"]}, r"cabundle\[0\]"),
    "public_key empty": ({"public_key": b""}, "public_key"),
    "user_data 1025 bytes": ({"user_data": bytes(1025)}, "user_data"),
    "nonce 1025 bytes": ({"nonce": bytes(1025)}, "nonce"),
    "nonce text": ({"nonce": "abc"}, "nonce"),
}


@pytest.mark.parametrize("case", list(MALFORMED_FIELDS), ids=list(MALFORMED_FIELDS))
def test_every_field_is_type_and_size_checked(sim_pki: SimPki, case: str) -> None:
    overrides, needle = MALFORMED_FIELDS[case]
    with pytest.raises(AttestationMalformed, match=needle):
        parse_attestation(_doc(sim_pki, **overrides))


def test_limits_are_inclusive(sim_pki: SimPki) -> None:
    doc = parse_attestation(
        _doc(
            sim_pki,
            public_key=bytes(1024),
            user_data=b"",
            nonce=bytes(1024),
            pcrs={i: bytes(64) for i in range(32)},
        )
    )
    assert doc.user_data == b"" and doc.public_key == bytes(1024) and len(doc.pcrs.indices()) == 32


@pytest.mark.parametrize(
    "field", ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"]
)
def test_mandatory_fields(sim_pki: SimPki, field: str) -> None:
    fields = default_fields(sim_pki)
    del fields[field]
    with pytest.raises(AttestationMalformed, match=f"'{field}' missing"):
        parse_attestation(sign_document(sim_pki.leaf.key, fields))


def test_optional_fields_may_be_absent_and_unknown_fields_are_kept(sim_pki: SimPki) -> None:
    fields = default_fields(sim_pki)
    for name in ("public_key", "user_data", "nonce"):
        del fields[name]
    fields["future_field"] = 1
    doc = sign_document(sim_pki.leaf.key, fields)
    parsed = parse_attestation(doc)
    assert parsed.nonce is None and parsed.unknown_fields == ["future_field"]
    result = verify_attestation(doc, roots=[sim_pki.trust_root], at=BASE_TIME)
    assert result.verdict is Verdict.PASS
    assert "future_field" in result.check("document.structure").detail  # type: ignore[union-attr]


def test_non_text_payload_key(sim_pki: SimPki) -> None:
    fields: dict[Any, Any] = default_fields(sim_pki)
    fields[7] = b"x"
    with pytest.raises(AttestationMalformed, match="non-text key"):
        parse_attestation(sign_document(sim_pki.leaf.key, fields))


def _envelope(
    protected: Any = b"\xa1\x01\x38\x22",
    unprotected: Any = None,
    payload: Any = b"\xa0",
    signature: Any = bytes(96),
) -> bytes:
    return cbor2.dumps([protected, {} if unprotected is None else unprotected, payload, signature])


ENVELOPES = {
    "not an array": (cbor2.dumps({"a": 1}), "array of 4"),
    "array of 3": (cbor2.dumps([b"", {}, b""]), "array of 4"),
    "other tag": (cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"", b""])), "tag 98"),
    "protected not bytes": (_envelope(protected={1: -35}), "protected header"),
    "protected empty": (_envelope(protected=b""), "no algorithm"),
    "protected not a map": (_envelope(protected=cbor2.dumps([1])), "not a map"),
    "protected crit": (_envelope(protected=cbor2.dumps({1: -35, 2: [99]})), "critical"),
    "alg missing": (_envelope(protected=cbor2.dumps({3: 0})), "algorithm"),
    "alg text": (_envelope(protected=cbor2.dumps({1: "ES384"})), "algorithm"),
    "unprotected not empty": (_envelope(unprotected={4: b"kid"}), "must be empty"),
    "payload nil (detached)": (_envelope(payload=None), "payload"),
    "payload not a map": (_envelope(payload=cbor2.dumps([1, 2])), "not a CBOR map"),
    "payload too large": (_envelope(payload=b"\xa0" * 16385), "16384"),
    "signature empty": (_envelope(signature=b""), "signature"),
    "trailing bytes": (_envelope() + b"\x00", "trailing"),
    "empty input": (b"", "truncated"),
    "too large": (b"\x84" + bytes(40000), "limit"),
}


@pytest.mark.parametrize("case", list(ENVELOPES), ids=list(ENVELOPES))
def test_envelope_structure(case: str) -> None:
    data, needle = ENVELOPES[case]
    with pytest.raises(AttestationMalformed, match=needle):
        parse_attestation(unwrap_transport(data) if data else data)


def test_unsupported_algorithm_fails_not_passes(sim_pki: SimPki) -> None:
    es256 = sign_document(sim_pki.leaf.key, default_fields(sim_pki), protected=b"\xa1\x01\x26")
    result = verify_attestation(
        es256, roots=[sim_pki.trust_root], at=BASE_TIME, chain_cache=ChainCache(0)
    )
    assert result.verdict is Verdict.FAIL
    assert {c.name for c in result.failed()} == {"cose.algorithm", "cose.signature"}


def test_unwrap_rejects_text_that_is_not_a_document() -> None:
    for text in (b"hello world!", b"aGVsbG8=", b"00ff"):
        with pytest.raises(AttestationMalformed):
            unwrap_transport(text)


# --- the strict CBOR decoder -------------------------------------------------------


def test_sig_structure_matches_cbor2() -> None:
    for protected, payload in ((b"\xa1\x01\x38\x22", b"x" * 300), (b"", b""), (b"p", bytes(70000))):
        assert sig_structure(protected, payload) == cbor2.dumps(
            ["Signature1", protected, b"", payload]
        )
    assert encode_head(0, 2**64 - 1) == cbor2.dumps(2**64 - 1)
    with pytest.raises(ValueError):
        encode_head(0, 2**64)
