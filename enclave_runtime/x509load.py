"""Loading X.509 certificates from untrusted bytes, with every lazy parse forced at once.

``cryptography`` decodes a certificate's parts lazily: a certificate that loads can
still raise on ``public_key()`` (a key algorithm it does not know), ``version``,
``extensions`` or a validity date, wherever that part is first used.  Loading through
:func:`load_certificate` turns all of these into one error of the caller's class, at
the place the certificate enters.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

#: what cryptography raises, lazily, for a certificate it parsed but cannot use
CERT_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def force_parse(cert: x509.Certificate) -> None:
    """Parse every lazily decoded part of ``cert`` now (raises one of :data:`CERT_ERRORS`)."""
    _ = cert.version, cert.serial_number, cert.extensions, cert.subject, cert.issuer
    _ = cert.public_key(), cert.signature_algorithm_oid
    _ = cert.not_valid_before_utc, cert.not_valid_after_utc


def load_certificate(
    data: bytes, *, what: str, error: Callable[[str], Exception]
) -> x509.Certificate:
    """One certificate from PEM (the first block) or DER, fully parsed; else ``error``."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
        force_parse(cert)
    except CERT_ERRORS as exc:
        raise error(f"{what}: not a usable X.509 certificate ({exc})") from None
    return cert
