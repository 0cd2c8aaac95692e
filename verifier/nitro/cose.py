"""COSE_Sign1 signature verification (RFC 9052 section 4.4) for ES384.

The signed bytes are ``CBOR(["Signature1", protected, h'', payload])`` built
from the protected header and payload **exactly as received**; nothing is
decoded and re-encoded.  The signature is raw ``r || s`` (48 bytes each).
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA384

from enclave_runtime.cbor import encode_bytes, encode_head, encode_text

ES384_SIGNATURE_BYTES: Final = 96
_CONTEXT: Final = encode_text("Signature1")


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The COSE Sig_structure for Sign1: the exact bytes the signer signed."""
    return (
        encode_head(4, 4)
        + _CONTEXT
        + encode_bytes(protected)
        + encode_bytes(external_aad)
        + encode_bytes(payload)
    )


def es384_problem(key: object, signature: bytes, protected: bytes, payload: bytes) -> str | None:
    """``None`` if ``signature`` is a valid ES384 signature by ``key``, else why not."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        return "leaf public key is not ECDSA P-384"
    if len(signature) != ES384_SIGNATURE_BYTES:
        return f"ES384 signature must be {ES384_SIGNATURE_BYTES} bytes (r||s), got {len(signature)}"
    r = int.from_bytes(signature[:48], "big")
    s = int.from_bytes(signature[48:], "big")
    if r == 0 or s == 0:
        return "signature r or s is zero"
    try:
        key.verify(
            encode_dss_signature(r, s), sig_structure(protected, payload), ec.ECDSA(SHA384())
        )
    except InvalidSignature:
        return "ES384 signature over the original protected header and payload does not verify"
    return None
