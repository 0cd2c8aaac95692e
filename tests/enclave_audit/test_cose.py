"""COSE_Sign1: the one structure the EIF signature, NSM documents and their simulators share."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from enclave_audit import cose
from enclave_audit.errors import AttestationMalformed, InvalidInput

CURVES = [(ec.SECP256R1(), cose.ES256), (ec.SECP384R1(), cose.ES384), (ec.SECP521R1(), cose.ES512)]


@pytest.mark.parametrize(("curve", "label"), CURVES)
def test_sign_encode_decode_verify(curve: ec.EllipticCurve, label: int) -> None:
    key = ec.generate_private_key(curve)
    message = cose.sign(b"payload", key)
    assert message.protected == cbor2.dumps({1: label})
    data = message.encode()
    # an independent decoder sees the RFC 9052 layout
    protected, unprotected, payload, signature = cbor2.loads(data)
    assert (protected, unprotected, payload) == (message.protected, {}, b"payload")
    assert len(signature) == cose.ECDSA[label].signature_size
    back = cose.Sign1.decode(data)
    assert back == message
    assert back.algorithm() == label
    assert cose.signature_problem(key.public_key(), label, back) is None


def test_sig_structure_is_rfc_9052() -> None:
    for protected, payload in ((b"\xa1\x01\x38\x22", b"x" * 300), (b"", b""), (b"p", bytes(70000))):
        assert cose.sig_structure(protected, payload) == cbor2.dumps(
            ["Signature1", protected, b"", payload]
        )


def test_deterministic_signing_gives_identical_bytes() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    first = cose.sign(b"pcr0", key, deterministic=True).encode()
    assert cose.sign(b"pcr0", key, deterministic=True).encode() == first
    assert cose.sign(b"pcr0", key).encode() != first


def test_tagged_messages_round_trip_and_other_tags_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    tagged = cose.sign(b"p", key, tagged=True)
    data = tagged.encode()
    assert data[0] == 0xD2
    assert cose.Sign1.decode(data).tagged
    wrong = cbor2.dumps(cbor2.CBORTag(98, cbor2.loads(cose.sign(b"p", key).encode())))
    with pytest.raises(InvalidInput, match="tag 98"):
        cose.Sign1.decode(wrong)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (cbor2.dumps([b"", {}, b""]), "array of 4"),
        (cbor2.dumps({"a": 1}), "array of 4"),
        (cbor2.dumps(["x", {}, b"", b""]), "protected header is not a byte string"),
        (cbor2.dumps([b"", [], b"", b""]), "unprotected header is not a map"),
        (cbor2.dumps([b"", {}, None, b""]), "payload"),
        (cbor2.dumps([b"", {}, b"", 5]), "signature"),
        (cbor2.dumps([b"", {}, b"", b""]) + b"\x00", "trailing"),
    ],
)
def test_malformed_structures_raise_the_callers_error(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        cose.Sign1.decode(data)
    with pytest.raises(AttestationMalformed, match=needle):
        cose.Sign1.decode(data, error=AttestationMalformed)


@pytest.mark.parametrize(
    ("protected", "needle"),
    [
        (b"", "empty protected header"),
        (cbor2.dumps([1]), "not a map"),
        (cbor2.dumps({1: -35, 2: [99]}), "critical"),
        (cbor2.dumps({3: 0}), "algorithm"),
        (cbor2.dumps({1: "ES384"}), "algorithm"),
        (cbor2.dumps({1: True}), "algorithm"),
    ],
)
def test_protected_header_problems(protected: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        cose.Sign1(protected, b"p", b"s").algorithm()


def test_signature_problems_are_named() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    message = cose.sign(b"payload", key)
    public = key.public_key()
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()

    def with_signature(raw: bytes) -> cose.Sign1:
        return cose.Sign1(message.protected, message.payload, raw)

    assert "does not verify" in (cose.signature_problem(other, cose.ES384, message) or "")
    assert "P-384" in (cose.signature_problem(p256, cose.ES384, message) or "")
    assert "unsupported" in (cose.signature_problem(public, -1, message) or "")
    assert "96 bytes" in (cose.signature_problem(public, cose.ES384, with_signature(b"x")) or "")
    assert "zero" in (cose.signature_problem(public, cose.ES384, with_signature(bytes(96))) or "")
    changed = cose.Sign1(message.protected, b"payloaD", message.signature)
    assert "does not verify" in (cose.signature_problem(public, cose.ES384, changed) or "")
