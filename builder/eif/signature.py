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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from builder.eif.format import MAX_SIGNATURE_SIZE
from enclave_audit import cose
from enclave_audit.errors import EifSignatureInvalid, InvalidInput
from enclave_runtime import cbor
from enclave_runtime.x509load import load_certificate


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


def sign_pcr0(pcr0: bytes, certificate_pem: bytes, private_key_pem: bytes) -> bytes:
    """The signature section's bytes for an image whose PCR0 is ``pcr0``."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"signing key: cannot load PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not any(
        a.curve == key.curve.name for a in cose.ECDSA.values()
    ):
        raise InvalidInput("signing key: must be an EC key on P-256, P-384 or P-521")
    cert = load_certificate(certificate_pem, what="signing certificate", error=InvalidInput)
    if cert.public_key() != key.public_key():
        raise InvalidInput("signing certificate does not match the signing key")
    # RFC 6979 deterministic ECDSA: identical inputs give a byte-identical image
    message = cose.sign(pcr_payload(pcr0), key, deterministic=True).encode()
    return cbor2.dumps(
        [{"signing_certificate": _int_array(certificate_pem), "signature": _int_array(message)}]
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
    outer = cbor.loads(data, what="signature section", error=EifSignatureInvalid)
    if not isinstance(outer, list) or not outer or not isinstance(outer[0], dict):
        raise EifSignatureInvalid("signature section: expected an array of signature maps")
    entry = outer[0]
    cert_pem = _bytes_from_int_array(entry.get("signing_certificate"), "signing_certificate")
    cose_raw = _bytes_from_int_array(entry.get("signature"), "signature")
    cert = load_certificate(
        cert_pem, what="signature section: certificate", error=EifSignatureInvalid
    )
    message = cose.Sign1.decode(
        cose_raw, what="signature section: COSE_Sign1", error=EifSignatureInvalid
    )
    payload = message.payload
    signed_pcr0 = _payload_pcr0(payload)
    valid, detail = _verify_cose(cert, message)
    return SignatureInfo(cert_pem, cert, signed_pcr0, valid, detail)


def _payload_pcr0(payload: bytes) -> bytes | None:
    try:
        info = cbor.loads(payload, what="signed payload")
    except InvalidInput:
        return None
    if not isinstance(info, dict) or info.get("register_index") != 0:
        return None
    try:
        value = _bytes_from_int_array(info.get("register_value"), "register_value")
    except EifSignatureInvalid:
        return None
    # the payload must be exactly the canonical PcrInfo, nothing added
    return value if pcr_payload(value) == payload else None


def _verify_cose(cert: x509.Certificate, message: cose.Sign1) -> tuple[bool, str]:
    try:
        algorithm = message.algorithm(what="COSE_Sign1")
    except InvalidInput as exc:
        return False, exc.message
    problem = cose.signature_problem(cert.public_key(), algorithm, message)
    if problem is not None:
        return False, f"{problem} (signing certificate)"
    return True, "COSE signature verifies under the signing certificate"
