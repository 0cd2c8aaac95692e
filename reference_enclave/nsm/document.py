"""Attestation documents in AWS's exact layout, signed ES384.

Untagged COSE_Sign1 ``[protected = a1 01 38 22, unprotected = {}, payload, signature]``;
the payload is a definite map of the nine keys in AWS order (module_id, digest,
timestamp, pcrs, certificate, cabundle, public_key, user_data, nonce) with the
timestamp in the 8-byte uint form, absent optional fields as null, cabundle
root first; the signature is raw r || s (96 bytes) over the Sig_structure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PROTECTED_ES384 = bytes.fromhex("a1013822")


def _uint64(value: int) -> bytes:
    return b"\x1b" + value.to_bytes(8, "big")


def encode_payload(
    *,
    module_id: str,
    timestamp_ms: int,
    pcrs: Mapping[int, bytes],
    certificate: bytes,
    cabundle: Sequence[bytes],
    public_key: bytes | None,
    user_data: bytes | None,
    nonce: bytes | None,
) -> bytes:
    d = cbor2.dumps
    parts = [
        b"\xa9",
        d("module_id"),
        d(module_id),
        d("digest"),
        d("SHA384"),
        d("timestamp"),
        _uint64(timestamp_ms),
        d("pcrs"),
        d({index: pcrs[index] for index in sorted(pcrs)}),
        d("certificate"),
        d(certificate),
        d("cabundle"),
        d(list(cabundle)),
        d("public_key"),
        d(public_key),
        d("user_data"),
        d(user_data),
        d("nonce"),
        d(nonce),
    ]
    return b"".join(parts)


def sign_document(
    *,
    module_id: str,
    timestamp_ms: int,
    pcrs: Mapping[int, bytes],
    leaf: x509.Certificate,
    leaf_key: ec.EllipticCurvePrivateKey,
    cabundle: Sequence[x509.Certificate],
    public_key: bytes | None,
    user_data: bytes | None,
    nonce: bytes | None,
) -> bytes:
    der = serialization.Encoding.DER
    payload = encode_payload(
        module_id=module_id,
        timestamp_ms=timestamp_ms,
        pcrs=pcrs,
        certificate=leaf.public_bytes(der),
        cabundle=[c.public_bytes(der) for c in cabundle],
        public_key=public_key,
        user_data=user_data,
        nonce=nonce,
    )
    to_sign = cbor2.dumps(["Signature1", PROTECTED_ES384, b"", payload])
    r, s = decode_dss_signature(leaf_key.sign(to_sign, ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    return cbor2.dumps([PROTECTED_ES384, {}, payload, signature])
