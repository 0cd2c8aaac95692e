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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enclave_audit import cose


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
    if leaf_key.curve.name != "secp384r1":
        raise ValueError("attestation documents are signed ES384 (P-384)")
    return cose.sign(payload, leaf_key).encode()
