"""The EIF signature section: CBOR as serde writes it, COSE_Sign1 over PCR0.

Layout (``shared/specs/nitro.md`` section 3)::

    [ { "signing_certificate": [u8...],   # the PEM file bytes, as an array of ints
        "signature":           [u8...] } ] # an untagged COSE_Sign1, as an array of ints

The COSE payload is ``{"register_index": 0, "register_value": [48 ints]}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from builder.eif.format import MAX_SIGNATURE_SIZE
from enclave_audit.errors import EifSignatureInvalid, InvalidInput
from enclave_audit.x509load import load_certificate

#: curve -> (COSE alg, hash, coordinate size)
_CURVES: dict[str, tuple[int, hashes.HashAlgorithm, int]] = {
    "secp256r1": (-7, hashes.SHA256(), 32),
    "secp384r1": (-35, hashes.SHA384(), 48),
    "secp521r1": (-36, hashes.SHA512(), 66),
}
_ALG_TO_CURVE = {alg: name for name, (alg, _, _) in _CURVES.items()}


def _int_array(data: bytes) -> list[int]:
    return list(data)


def _bytes_from_int_array(value: object, what: str) -> bytes:
    if isinstance(value, bytes):  # be liberal: a byte string carries the same bytes
        return value
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value
    ):
        raise EifSignatureInvalid(f"signature section: {what} is not an array of bytes")
    return bytes(value)


def pcr_payload(pcr0: bytes) -> bytes:
    """CBOR of serde's ``PcrInfo { register_index: 0, register_value: [..] }``."""
    return cbor2.dumps({"register_index": 0, "register_value": _int_array(pcr0)})


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign_pcr0(pcr0: bytes, certificate_pem: bytes, private_key_pem: bytes) -> bytes:
    """The signature section's bytes for an image whose PCR0 is ``pcr0``."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"signing key: cannot load PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise InvalidInput("signing key: must be an EC key on P-256, P-384 or P-521")
    cert = load_certificate(certificate_pem, what="signing certificate", error=InvalidInput)
    if cert.public_key() != key.public_key():
        raise InvalidInput("signing certificate does not match the signing key")
    alg, hash_alg, size = _CURVES[key.curve.name]
    protected = cbor2.dumps({1: alg})
    payload = pcr_payload(pcr0)
    # RFC 6979 deterministic ECDSA: identical inputs give a byte-identical image
    der = key.sign(
        _sig_structure(protected, payload), ec.ECDSA(hash_alg, deterministic_signing=True)
    )
    r, s = decode_dss_signature(der)
    raw_sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    cose = cbor2.dumps([protected, {}, payload, raw_sig])
    return cbor2.dumps(
        [{"signing_certificate": _int_array(certificate_pem), "signature": _int_array(cose)}]
    )


@dataclass(frozen=True)
class SignatureInfo:
    """What the signature section says and whether it holds for an image."""

    certificate_pem: bytes
    certificate: x509.Certificate
    signed_pcr0: bytes | None
    cose_valid: bool
    detail: str

    def covers(self, pcr0: bytes) -> bool:
        return self.cose_valid and self.signed_pcr0 == pcr0

    def describe_certificate(self) -> dict[str, Any]:
        """``SigningCertificate`` as nitro-cli describe-eif prints it."""
        cert = self.certificate
        issuer: dict[str, str] = {}
        for attr in cert.issuer:
            name = attr.oid._name if attr.oid._name != "Unknown OID" else attr.oid.dotted_string
            issuer[name] = str(attr.value)
        sig_alg = cert.signature_algorithm_oid._name
        return {
            "IssuerName": issuer,
            "Algorithm": sig_alg,
            "NotBefore": _openssl_time(cert.not_valid_before_utc),
            "NotAfter": _openssl_time(cert.not_valid_after_utc),
            "Signature": ":".join(f"{b:02X}" for b in cert.signature),
        }


def _openssl_time(when: datetime) -> str:
    when = when.astimezone(UTC)
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S} {when.year} GMT"


def parse_signature_section(data: bytes) -> SignatureInfo:
    """Decode and check a signature section (never trusts its content blindly)."""
    if len(data) > MAX_SIGNATURE_SIZE:
        raise EifSignatureInvalid(
            f"signature section is {len(data)} bytes, over the {MAX_SIGNATURE_SIZE}-byte limit"
        )
    try:
        outer = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise EifSignatureInvalid(f"signature section: not valid CBOR: {exc}") from None
    if not isinstance(outer, list) or not outer or not isinstance(outer[0], dict):
        raise EifSignatureInvalid("signature section: expected an array of signature maps")
    entry = outer[0]
    cert_pem = _bytes_from_int_array(entry.get("signing_certificate"), "signing_certificate")
    cose_raw = _bytes_from_int_array(entry.get("signature"), "signature")
    cert = load_certificate(
        cert_pem, what="signature section: certificate", error=EifSignatureInvalid
    )
    try:
        cose = cbor2.loads(cose_raw)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise EifSignatureInvalid(f"signature section: COSE_Sign1 not valid CBOR: {exc}") from None
    if isinstance(cose, cbor2.CBORTag) and cose.tag == 18:
        cose = cose.value
    if (
        not isinstance(cose, list)
        or len(cose) != 4
        or not isinstance(cose[0], bytes)
        or not isinstance(cose[1], dict)
        or not isinstance(cose[2], bytes)
        or not isinstance(cose[3], bytes)
    ):
        raise EifSignatureInvalid("signature section: COSE_Sign1 is not [bstr, map, bstr, bstr]")
    protected, _unprotected, payload, raw_sig = cose
    signed_pcr0 = _payload_pcr0(payload)
    valid, detail = _verify_cose(cert, protected, payload, raw_sig)
    return SignatureInfo(cert_pem, cert, signed_pcr0, valid, detail)


def _payload_pcr0(payload: bytes) -> bytes | None:
    try:
        info = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
        return None
    if not isinstance(info, dict) or info.get("register_index") != 0:
        return None
    try:
        value = _bytes_from_int_array(info.get("register_value"), "register_value")
    except EifSignatureInvalid:
        return None
    # the payload must be exactly the canonical PcrInfo, nothing added
    return value if pcr_payload(value) == payload else None


def _verify_cose(
    cert: x509.Certificate, protected: bytes, payload: bytes, raw_sig: bytes
) -> tuple[bool, str]:
    try:
        header = cbor2.loads(protected)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
        return False, "protected header is not CBOR"
    alg = header.get(1) if isinstance(header, dict) else None
    curve = _ALG_TO_CURVE.get(alg) if isinstance(alg, int) else None
    key = cert.public_key()
    if curve is None:
        return False, f"unsupported COSE algorithm {alg!r}"
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
        return False, "certificate key does not match the COSE algorithm"
    _, hash_alg, size = _CURVES[curve]
    if len(raw_sig) != 2 * size:
        return False, f"signature is {len(raw_sig)} bytes, expected {2 * size}"
    r = int.from_bytes(raw_sig[:size], "big")
    s = int.from_bytes(raw_sig[size:], "big")
    try:
        key.verify(
            encode_dss_signature(r, s), _sig_structure(protected, payload), ec.ECDSA(hash_alg)
        )
    except InvalidSignature:
        return False, "COSE signature does not verify under the signing certificate"
    return True, "COSE signature verifies under the signing certificate"
