"""X.509 rules for the Nitro attestation PKI: profile, issuance and validity.

The AWS chain (root, regional, zonal, instance CA, leaf) is ECDSA P-384 with
ecdsa-with-SHA384 everywhere; CAs carry a critical basicConstraints with a
path length and keyUsage keyCertSign; the leaf has basicConstraints CA=false,
keyUsage digitalSignature and, unlike the WebPKI profile, no Authority Key
Identifier (pyca's default client policy rejects it for that alone).  These
rules are applied the same way to any ``--root`` (simulation) chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.hashes import SHA256, SHA384
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from enclave_audit.errors import AttestationMalformed
from enclave_audit.model.attestation_doc import CertificateSummary
from enclave_runtime.x509load import CERT_ERRORS, force_parse

#: extensions whose meaning this verifier implements or that carry no constraint for it;
#: any other extension marked critical makes the certificate unusable (RFC 5280 4.2).
KNOWN_EXTENSIONS: Final = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.EXTENDED_KEY_USAGE,
    }
)


_E = TypeVar("_E", bound=x509.ExtensionType)


class Role(StrEnum):
    ROOT = "root"
    INTERMEDIATE = "intermediate"
    LEAF = "leaf"


def parse_der(der: bytes, *, what: str) -> x509.Certificate:
    """A DER certificate, or :class:`AttestationMalformed` naming ``what``."""
    try:
        cert = x509.load_der_x509_certificate(der)
        force_parse(cert)
    except CERT_ERRORS as exc:
        raise AttestationMalformed(f"{what}: not a valid DER X.509 certificate ({exc})") from None
    return cert


def sha256_hex(cert: x509.Certificate) -> str:
    """SHA-256 over the certificate's DER (``fingerprint``: no re-encoding, and no import
    of pyca's serialization package, which ``public_bytes`` pulls in)."""
    return cert.fingerprint(SHA256()).hex()


def name_of(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def profile_problems(cert: x509.Certificate, role: Role) -> Iterator[str]:
    """Everything wrong with ``cert`` for its role in a Nitro chain (nothing if fine)."""
    if cert.version is not x509.Version.v3:
        yield "not an X.509 v3 certificate"
    if cert.serial_number <= 0:
        yield "serial number is not positive (RFC 5280 4.1.2.2)"
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        yield "public key is not ECDSA P-384"
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
        oid = cert.signature_algorithm_oid.dotted_string
        yield f"signature algorithm {oid} is not ecdsa-with-SHA384"
    for ext in cert.extensions:
        if ext.critical and ext.oid not in KNOWN_EXTENSIONS:
            yield f"unsupported critical extension {ext.oid.dotted_string}"
    constraints = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    if role is Role.LEAF:
        if constraints is not None and constraints.value.ca:
            yield "leaf certificate is a CA (basicConstraints CA=true)"
        if usage is None or not usage.value.digital_signature:
            yield "leaf keyUsage lacks digitalSignature"
        return
    if constraints is None or not constraints.value.ca:
        yield "CA certificate lacks basicConstraints CA=true"
    elif not constraints.critical:
        yield "CA basicConstraints is not critical"
    if usage is None or not usage.value.key_cert_sign:
        yield "CA keyUsage lacks keyCertSign"


def path_length(cert: x509.Certificate) -> int | None:
    constraints = _extension(cert, x509.BasicConstraints)
    return None if constraints is None else constraints.value.path_length


def issuance_problem(
    child: x509.Certificate,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePublicKey | None = None,
) -> str | None:
    """Why ``issuer`` did not issue ``child`` (name chaining, key identifiers, signature).

    ``issuer_key`` is the issuer's already loaded public key (the chain cache keeps
    it, which saves re-decoding the P-384 point for every document).
    """
    if child.issuer != issuer.subject:
        return f"issuer name {child.issuer.rfc4514_string()!r} != {name_of(issuer)!r}"
    aki = _extension(child, x509.AuthorityKeyIdentifier)
    ski = _extension(issuer, x509.SubjectKeyIdentifier)
    if aki is not None and ski is not None and aki.value.key_identifier is not None:
        if aki.value.key_identifier != ski.value.digest:
            return "authority key identifier does not match the issuer's subject key identifier"
    if child.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
        return f"signature algorithm {child.signature_algorithm_oid.dotted_string} not supported"
    try:
        key = issuer.public_key() if issuer_key is None else issuer_key
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return "issuer key is not an ECDSA key"
        key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(SHA384()))
    except InvalidSignature:
        return "signature does not verify under the issuer's key"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"signature cannot be checked: {exc}"
    return None


def validity_problem(cert: x509.Certificate, at: datetime) -> str | None:
    """``None`` if ``at`` lies in [notBefore, notAfter], else a one-line reason."""
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if at < before:
        return f"not yet valid at {_iso(at)} (notBefore {_iso(before)})"
    if at > after:
        return f"expired at {_iso(at)} (notAfter {_iso(after)})"
    return None


def summarize(cert: x509.Certificate, *, issuer: str | None = None) -> CertificateSummary:
    """Display fields; ``issuer`` may pass the already formatted issuer name."""
    return CertificateSummary(
        subject=name_of(cert),
        issuer=cert.issuer.rfc4514_string() if issuer is None else issuer,
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=sha256_hex(cert),
    )


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _extension(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E] | None:
    try:
        return cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None
