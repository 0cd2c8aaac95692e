"""Trust roots: the pinned AWS Nitro Enclaves Root-G1 and roots loaded from PEM files.

The AWS root is embedded as text (a public certificate, published by AWS in
``AWS_NitroEnclaves_Root-G1.zip``) and its SHA-256 fingerprint over the DER is
checked every time it is loaded, against the value AWS publishes in "Verifying
the root of trust".  A second root (``--root PEM``, e.g. the reference
enclave's simulation CA) goes through the same CA profile checks.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509

from enclave_audit.errors import InvalidInput, TrustError
from enclave_audit.fsutil import read_bytes
from enclave_runtime.x509load import CERT_ERRORS, force_parse
from verifier.nitro.certs import Role, issuance_problem, profile_problems

AWS_ROOT_NAME: Final = "AWS Nitro Enclaves Root-G1"

#: SHA-256 over the DER, as AWS publishes it (64:1A:03:21:...:8F:79:BB:5B).
AWS_ROOT_SHA256: Final = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

#: ``root.pem`` from AWS_NitroEnclaves_Root-G1.zip (zip SHA-256 8cf60e2b...faff7c).
AWS_ROOT_PEM: Final = b"""-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----"""


@dataclass(frozen=True)
class TrustRoot:
    """A trust anchor: a CA certificate, its DER bytes, fingerprint and a display name."""

    name: str
    der: bytes
    sha256: str
    certificate: x509.Certificate = field(compare=False, repr=False)

    @classmethod
    def from_pem(cls, pem: bytes, *, name: str, expected_sha256: str | None = None) -> TrustRoot:
        """Load exactly one PEM certificate and check it can act as a Nitro trust root.

        Raises :class:`InvalidInput` for unreadable PEM and :class:`TrustError`
        when the fingerprint differs from ``expected_sha256`` or the
        certificate cannot be a CA for a Nitro chain.
        """
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise InvalidInput(f"trust root {name}: not a PEM certificate ({exc})") from None
        if len(certs) != 1:
            raise InvalidInput(f"trust root {name}: expected one certificate, found {len(certs)}")
        cert = certs[0]
        try:
            force_parse(cert)
        except CERT_ERRORS as exc:  # e.g. a key algorithm cryptography does not know
            raise InvalidInput(f"trust root {name}: unusable certificate ({exc})") from None
        from cryptography.hazmat.primitives.serialization import Encoding

        return cls._anchor(cert, cert.public_bytes(Encoding.DER), name, expected_sha256)

    @classmethod
    def from_der(cls, der: bytes, *, name: str, expected_sha256: str | None = None) -> TrustRoot:
        """Like :meth:`from_pem`, for one DER certificate."""
        try:
            cert = x509.load_der_x509_certificate(der)
            force_parse(cert)
        except CERT_ERRORS as exc:
            raise InvalidInput(f"trust root {name}: not a usable DER certificate ({exc})") from None
        return cls._anchor(cert, der, name, expected_sha256)

    @classmethod
    def _anchor(
        cls, cert: x509.Certificate, der: bytes, name: str, expected_sha256: str | None
    ) -> TrustRoot:
        """The pinned fingerprint (if any) and the CA profile, as every root must meet them."""
        fingerprint = hashlib.sha256(der).hexdigest()
        if expected_sha256 is not None and fingerprint != expected_sha256.lower():
            raise TrustError(
                f"trust root {name}: SHA-256 fingerprint {fingerprint} != pinned {expected_sha256}"
            )
        try:
            problems = list(profile_problems(cert, Role.ROOT))
        except (ValueError, x509.DuplicateExtension) as exc:
            raise InvalidInput(f"trust root {name}: unreadable extensions ({exc})") from None
        if cert.issuer == cert.subject:
            bad_self_signature = issuance_problem(cert, cert)
            if bad_self_signature is not None:
                problems.append(f"self-signature: {bad_self_signature}")
        if problems:
            raise TrustError(
                f"trust root {name}: cannot anchor a Nitro chain: {'; '.join(problems)}"
            )
        return cls(name=name, der=der, sha256=fingerprint, certificate=cert)

    @classmethod
    def from_file(cls, path: Path, *, expected_sha256: str | None = None) -> TrustRoot:
        """A root from a PEM file (``--root``); its name is the path as given."""
        return cls.from_pem(
            read_bytes(path, limit=1 << 20), name=str(path), expected_sha256=expected_sha256
        )


@functools.cache
def aws_nitro_root() -> TrustRoot:
    """The pinned AWS root; raises :class:`TrustError` if the embedded copy was altered.

    The DER is the base64 body of :data:`AWS_ROOT_PEM` (RFC 7468), decoded here: the
    same bytes the pinned SHA-256 is checked over, without pyca's PEM and serialization
    layers (which cost the one-document verify process start-up time).
    """
    body = AWS_ROOT_PEM.split(b"-----BEGIN CERTIFICATE-----", 1)[1]
    body = body.split(b"-----END CERTIFICATE-----", 1)[0]
    der = base64.b64decode(b"".join(body.split()), validate=True)
    return TrustRoot.from_der(der, name=AWS_ROOT_NAME, expected_sha256=AWS_ROOT_SHA256)


def default_roots() -> tuple[TrustRoot, ...]:
    return (aws_nitro_root(),)
