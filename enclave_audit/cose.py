"""COSE_Sign1 (RFC 9052 sections 4.2 and 4.4), the one copy the project uses.

The EIF signature section (``builder.eif.signature``), Nitro attestation documents
(``verifier.nitro``) and the reference NSM simulator all carry a COSE_Sign1
``[protected: bstr, unprotected: map, payload: bstr, signature: bstr]``, optionally
under tag 18, signed with ECDSA as raw ``r || s``.

Decoding uses the strict CBOR decoder (one item, no trailing bytes, no duplicate
keys) and keeps the protected header and payload **exactly as received**: the
signed bytes are ``CBOR(["Signature1", protected, h'', payload])`` built from them,
never from a re-encoding.  Policy (which algorithm a caller accepts, whether the
unprotected header must be empty) stays with the caller; this module only says
what the structure is and whether a signature holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from enclave_runtime.cbor import Tagged, encode_bytes, encode_head, encode_text, loads
from enclave_runtime.errors import EnclaveAuditError, InvalidInput

SIGN1_TAG: Final = 18
ES256: Final = -7
ES384: Final = -35
ES512: Final = -36
_HEADER_ALG: Final = 1
_HEADER_CRIT: Final = 2
_CONTEXT: Final = encode_text("Signature1")


@dataclass(frozen=True)
class EcdsaAlgorithm:
    """A COSE ECDSA algorithm: its label, curve, hash and coordinate size in bytes."""

    label: int
    name: str
    curve: str  # cryptography's curve name
    curve_label: str
    hash: type[hashes.HashAlgorithm]
    size: int

    @property
    def signature_size(self) -> int:
        return 2 * self.size


ECDSA: Final[Mapping[int, EcdsaAlgorithm]] = {
    a.label: a
    for a in (
        EcdsaAlgorithm(ES256, "ES256", "secp256r1", "P-256", hashes.SHA256, 32),
        EcdsaAlgorithm(ES384, "ES384", "secp384r1", "P-384", hashes.SHA384, 48),
        EcdsaAlgorithm(ES512, "ES512", "secp521r1", "P-521", hashes.SHA512, 66),
    )
}


def algorithm_for_key(
    key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey,
) -> EcdsaAlgorithm:
    """The COSE algorithm of an EC key's curve (P-256, P-384 or P-521)."""
    for algorithm in ECDSA.values():
        if algorithm.curve == key.curve.name:
            return algorithm
    raise InvalidInput(f"EC key on {key.curve.name}: COSE signing supports P-256, P-384, P-521")


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The Sig_structure for Sign1: exactly the bytes the signer signed."""
    return (
        encode_head(4, 4)
        + _CONTEXT
        + encode_bytes(protected)
        + encode_bytes(external_aad)
        + encode_bytes(payload)
    )


def protected_header(algorithm: int) -> bytes:
    """``{1: algorithm}`` in preferred encoding (ES384: ``a1 01 38 22``)."""
    label = encode_head(0, algorithm) if algorithm >= 0 else encode_head(1, -1 - algorithm)
    return encode_head(5, 1) + encode_head(0, _HEADER_ALG) + label


@dataclass(frozen=True)
class Sign1:
    """A COSE_Sign1 message; ``protected`` and ``payload`` are the bytes as received."""

    protected: bytes
    payload: bytes
    signature: bytes
    unprotected: Mapping[object, object] = field(default_factory=dict)
    tagged: bool = False

    def encode(self) -> bytes:
        """The message's CBOR (definite lengths, tag 18 when ``tagged``)."""
        envelope = [self.protected, dict(self.unprotected), self.payload, self.signature]
        return cbor2.dumps(cbor2.CBORTag(SIGN1_TAG, envelope) if self.tagged else envelope)

    @classmethod
    def decode(
        cls,
        data: bytes,
        *,
        what: str = "COSE_Sign1",
        error: type[EnclaveAuditError] = InvalidInput,
    ) -> Sign1:
        """Exactly one COSE_Sign1 (tagged 18 or untagged) filling ``data``; ``error`` otherwise."""
        envelope = loads(data, what=what, error=error)
        tagged = False
        if isinstance(envelope, Tagged):
            if envelope.tag != SIGN1_TAG:
                raise error(f"{what}: tag {envelope.tag}, expected none or {SIGN1_TAG}")
            tagged, envelope = True, envelope.value
        if not isinstance(envelope, list) or len(envelope) != 4:
            raise error(f"{what}: not an array of 4 items")
        protected, unprotected, payload, signature = envelope
        if not isinstance(protected, bytes):
            raise error(f"{what}: protected header is not a byte string")
        if not isinstance(unprotected, Mapping):
            raise error(f"{what}: unprotected header is not a map")
        if not isinstance(payload, bytes):
            raise error(f"{what}: payload is not an embedded byte string")
        if not isinstance(signature, bytes):
            raise error(f"{what}: signature is not a byte string")
        return cls(protected, payload, signature, unprotected, tagged)

    def algorithm(
        self, *, what: str = "COSE_Sign1", error: type[EnclaveAuditError] = InvalidInput
    ) -> int:
        """The protected header's algorithm label (critical headers are refused)."""
        if not self.protected:
            raise error(f"{what}: empty protected header (no algorithm)")
        header = loads(self.protected, what=f"{what} protected header", error=error)
        if not isinstance(header, Mapping):
            raise error(f"{what} protected header: not a map")
        if _HEADER_CRIT in header:
            raise error(f"{what} protected header: critical headers are not supported")
        algorithm = header.get(_HEADER_ALG)
        if not isinstance(algorithm, int) or isinstance(algorithm, bool):
            raise error(f"{what} protected header: algorithm (label 1) missing or not an integer")
        return algorithm

    def to_be_signed(self) -> bytes:
        return sig_structure(self.protected, self.payload)


def sign(
    payload: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    deterministic: bool = False,
    tagged: bool = False,
) -> Sign1:
    """Sign ``payload`` with the algorithm of ``key``'s curve (RFC 6979 when ``deterministic``)."""
    algorithm = algorithm_for_key(key)
    protected = protected_header(algorithm.label)
    der = key.sign(
        sig_structure(protected, payload),
        ec.ECDSA(algorithm.hash(), deterministic_signing=deterministic),
    )
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(algorithm.size, "big") + s.to_bytes(algorithm.size, "big")
    return Sign1(protected, payload, raw, {}, tagged)


def signature_problem(key: object, algorithm: int, message: Sign1) -> str | None:
    """``None`` if ``message`` carries a valid ``algorithm`` signature by ``key``, else why not."""
    spec = ECDSA.get(algorithm)
    if spec is None:
        return f"unsupported COSE algorithm {algorithm}"
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != spec.curve:
        return f"public key is not ECDSA {spec.curve_label} ({spec.name})"
    if len(message.signature) != spec.signature_size:
        return (
            f"{spec.name} signature must be {spec.signature_size} bytes (r||s),"
            f" got {len(message.signature)}"
        )
    r = int.from_bytes(message.signature[: spec.size], "big")
    s = int.from_bytes(message.signature[spec.size :], "big")
    if r == 0 or s == 0:
        return "signature r or s is zero"
    try:
        key.verify(encode_dss_signature(r, s), message.to_be_signed(), ec.ECDSA(spec.hash()))
    except InvalidSignature:
        return (
            f"{spec.name} signature over the original protected header and payload does not verify"
        )
    return None
