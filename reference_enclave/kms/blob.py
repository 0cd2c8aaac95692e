"""The KMS ``CiphertextBlob`` format of this reference KMS (AWS's own is undocumented).

Layout (all fixed-size except the sealed part)::

    magic   b"EAKMS"          5 bytes
    version 0x01              1 byte
    key id  UUID as 36 ASCII  36 bytes
    nonce                     12 bytes
    sealed  AES-256-GCM(key material, nonce, plaintext, aad) = ciphertext || 16-byte tag

The AAD is the 42-byte header (magic, version, key id) followed by the canonical
encryption context: JSON with sorted keys, no spaces, UTF-8.  A changed key id,
version or encryption context fails authentication (InvalidCiphertextException).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reference_enclave.kms.errors import invalid_ciphertext

MAGIC = b"EAKMS"
VERSION = 1
_HEADER = len(MAGIC) + 1 + 36
_NONCE = 12
_TAG = 16
MAX_BLOB = 6144


@dataclass(frozen=True)
class BlobHeader:
    key_id: str
    header: bytes
    nonce: bytes
    sealed: bytes


def canonical_context(context: Mapping[str, str] | None) -> bytes:
    return json.dumps(dict(context or {}), sort_keys=True, separators=(",", ":")).encode("utf-8")


def seal(
    key_id: str, material: bytes, plaintext: bytes, context: Mapping[str, str] | None
) -> bytes:
    header = MAGIC + bytes([VERSION]) + key_id.encode("ascii")
    assert len(header) == _HEADER, "key ids are canonical UUIDs"
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(material).encrypt(nonce, plaintext, header + canonical_context(context))
    return header + nonce + sealed


def read_header(blob: bytes) -> BlobHeader:
    """Split a blob; InvalidCiphertextException if it is not one of ours."""
    if len(blob) > MAX_BLOB or len(blob) < _HEADER + _NONCE + _TAG:
        raise invalid_ciphertext()
    if blob[: len(MAGIC)] != MAGIC or blob[len(MAGIC)] != VERSION:
        raise invalid_ciphertext()
    try:
        key_id = str(uuid.UUID(blob[len(MAGIC) + 1 : _HEADER].decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        raise invalid_ciphertext() from None
    if key_id.encode("ascii") != blob[len(MAGIC) + 1 : _HEADER]:
        raise invalid_ciphertext()
    return BlobHeader(
        key_id=key_id,
        header=blob[:_HEADER],
        nonce=blob[_HEADER : _HEADER + _NONCE],
        sealed=blob[_HEADER + _NONCE :],
    )


def open_blob(parsed: BlobHeader, material: bytes, context: Mapping[str, str] | None) -> bytes:
    try:
        return AESGCM(material).decrypt(
            parsed.nonce, parsed.sealed, parsed.header + canonical_context(context)
        )
    except InvalidTag:
        raise invalid_ciphertext() from None
