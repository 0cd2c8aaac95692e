"""Parse a Nitro attestation document: COSE_Sign1 envelope and payload, fully type-checked.

``parse_attestation(bytes) -> AttestationDocument`` decodes and checks the
structure only; it judges nothing (that is :mod:`verifier.nitro.verify`).
Every problem raises :class:`~enclave_audit.errors.AttestationMalformed` with
one line naming the field.

Limits follow the AWS validation text, widened where real documents exceed it:
optional fields (``public_key``, ``user_data``, ``nonce``) up to 1024 bytes
(a real 2024 document carries 1024-byte values), certificates 1..1024 bytes,
1..32 PCRs of 32/48/64 bytes at indices 0..31, payload at most 16384 bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from enclave_audit.cose import ES384, Sign1
from enclave_audit.errors import AttestationMalformed
from enclave_audit.model.attestation_doc import AttestationDocument
from enclave_audit.model.measurements import PCR_SIZES, PcrSet
from enclave_runtime.cbor import CborMap, loads

#: COSE algorithm identifiers seen in Nitro documents.
ALG_ES384: Final = ES384
ALG_QEMU_UNSIGNED: Final = -1

MAX_DOCUMENT_BYTES: Final = 32 * 1024
MAX_TEXT_BYTES: Final = 64 * 1024
MAX_PAYLOAD_BYTES: Final = 16 * 1024
MAX_CERT_BYTES: Final = 1024
MAX_CABUNDLE: Final = 16
MAX_OPTIONAL_BYTES: Final = 1024
MAX_MODULE_ID: Final = 256
MAX_PCRS: Final = 32
#: 9999-12-31T23:59:59.999Z in milliseconds: beyond this a timestamp is not a time.
MAX_TIMESTAMP_MS: Final = 253_402_300_799_999

MANDATORY_FIELDS: Final = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
OPTIONAL_FIELDS: Final = ("public_key", "user_data", "nonce")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_HEX_TEXT = re.compile(rb"^[0-9a-fA-F]+$")
_B64_TEXT = re.compile(rb"^[A-Za-z0-9+/=_-]+$")
_COSE_FIRST_BYTES = (0x84, 0xD2)  # array(4), tag 18


def unwrap_transport(data: bytes) -> bytes:
    """The raw COSE_Sign1 bytes from raw CBOR, base64 (standard or URL-safe) or hex text.

    A raw document starts with ``0x84`` (array of 4) or ``0xd2`` (tag 18),
    neither of which is printable ASCII, so detection is unambiguous.
    """
    if not data:
        raise AttestationMalformed("attestation document: empty input")
    if data[0] in _COSE_FIRST_BYTES or data[0] >= 0x80:
        return data
    if len(data) > MAX_TEXT_BYTES:
        raise AttestationMalformed(
            f"attestation document: text input larger than {MAX_TEXT_BYTES} bytes"
        )
    text = b"".join(data.split())
    if _HEX_TEXT.match(text) and len(text) % 2 == 0:
        raw = bytes.fromhex(text.decode("ascii"))
        if raw and raw[0] in _COSE_FIRST_BYTES:
            return raw
    if not _B64_TEXT.match(text):
        raise AttestationMalformed(
            f"attestation document: neither CBOR nor base64/hex text (first byte 0x{data[0]:02x})"
        )
    text = text.rstrip(b"=")
    padded = text + b"=" * (-len(text) % 4)
    alphabet_urlsafe = b"-" in text or b"_" in text
    try:
        raw = (
            base64.urlsafe_b64decode(padded)
            if alphabet_urlsafe
            else base64.b64decode(padded, validate=True)
        )
    except (binascii.Error, ValueError) as exc:
        raise AttestationMalformed(f"attestation document: invalid base64 ({exc})") from None
    if not raw or raw[0] not in _COSE_FIRST_BYTES:
        raise AttestationMalformed(
            "attestation document: base64 text does not decode to a COSE_Sign1 structure"
        )
    return raw


def parse_attestation(document: bytes) -> AttestationDocument:
    """Decode and type-check a raw COSE_Sign1 attestation document (no trust decision)."""
    if not isinstance(document, bytes | bytearray | memoryview):
        raise AttestationMalformed("attestation document: expected bytes")
    document = bytes(document)
    if len(document) > MAX_DOCUMENT_BYTES:
        raise AttestationMalformed(
            f"attestation document: {len(document)} bytes, more than the {MAX_DOCUMENT_BYTES} limit"
        )
    message = Sign1.decode(document, what="COSE_Sign1", error=AttestationMalformed)
    protected, payload, signature = message.protected, message.payload, message.signature
    if message.unprotected:
        raise AttestationMalformed(
            "COSE_Sign1: unprotected header must be empty (Nitro documents carry none)"
        )
    if not payload:
        raise AttestationMalformed("COSE_Sign1: payload is not an embedded byte string")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise AttestationMalformed(
            f"COSE_Sign1: payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}"
        )
    if not signature:
        raise AttestationMalformed("COSE_Sign1: signature is not a non-empty byte string")
    algorithm = message.algorithm(what="COSE", error=AttestationMalformed)
    fields = loads(payload, what="attestation payload", error=AttestationMalformed)
    if not isinstance(fields, CborMap):
        raise AttestationMalformed("attestation payload: not a CBOR map")
    return _document(
        fields,
        payload=payload,
        protected=protected,
        signature=signature,
        algorithm=algorithm,
        tagged=message.tagged,
    )


def _document(
    fields: CborMap,
    *,
    payload: bytes,
    protected: bytes,
    signature: bytes,
    algorithm: int,
    tagged: bool,
) -> AttestationDocument:
    unknown: list[str] = []
    for key in fields:
        if not isinstance(key, str):
            raise AttestationMalformed(f"attestation payload: non-text key {key!r}")
        if key not in MANDATORY_FIELDS and key not in OPTIONAL_FIELDS:
            unknown.append(key)
    for name in MANDATORY_FIELDS:
        if name not in fields:
            raise AttestationMalformed(f"attestation payload: mandatory field '{name}' missing")

    module_id = fields["module_id"]
    if not isinstance(module_id, str) or not 0 < len(module_id) <= MAX_MODULE_ID:
        raise AttestationMalformed(
            f"attestation payload: 'module_id' must be text of 1..{MAX_MODULE_ID} characters"
        )
    digest = fields["digest"]
    if digest != "SHA384":
        raise AttestationMalformed(
            f"attestation payload: 'digest' is {digest!r}, expected 'SHA384'"
        )
    timestamp = fields["timestamp"]
    if (
        not isinstance(timestamp, int)
        or isinstance(timestamp, bool)
        or not 0 < timestamp <= MAX_TIMESTAMP_MS
    ):
        raise AttestationMalformed(
            "attestation payload: 'timestamp' must be a positive integer of milliseconds"
        )

    return AttestationDocument(
        module_id=module_id,
        digest=digest,
        timestamp=_EPOCH + timedelta(milliseconds=timestamp),
        timestamp_ms=timestamp,
        pcrs=_pcrs(fields["pcrs"]),
        certificate=_bstr(fields["certificate"], "certificate", 1, MAX_CERT_BYTES),
        cabundle=_cabundle(fields["cabundle"]),
        public_key=_optional(fields, "public_key", minimum=1),
        user_data=_optional(fields, "user_data", minimum=0),
        nonce=_optional(fields, "nonce", minimum=0),
        cose_algorithm=algorithm,
        tagged=tagged,
        payload_map="indefinite" if fields.indefinite else "definite",
        protected_header=protected,
        signature=signature,
        unknown_fields=unknown,
        payload=payload,
    )


def _bstr(value: object, name: str, minimum: int, maximum: int) -> bytes:
    if not isinstance(value, bytes):
        raise AttestationMalformed(f"attestation payload: '{name}' is not a byte string")
    if not minimum <= len(value) <= maximum:
        raise AttestationMalformed(
            f"attestation payload: '{name}' is {len(value)} bytes, allowed {minimum}..{maximum}"
        )
    return value


def _optional(fields: Mapping[object, object], name: str, *, minimum: int) -> bytes | None:
    value = fields.get(name)
    if value is None:
        return None
    return _bstr(value, name, minimum, MAX_OPTIONAL_BYTES)


def _cabundle(value: object) -> list[bytes]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_CABUNDLE:
        raise AttestationMalformed(
            f"attestation payload: 'cabundle' must be an array of 1..{MAX_CABUNDLE} certificates"
        )
    return [_bstr(item, f"cabundle[{i}]", 1, MAX_CERT_BYTES) for i, item in enumerate(value)]


def _pcrs(value: object) -> PcrSet:
    if not isinstance(value, Mapping) or not 0 < len(value) <= MAX_PCRS:
        raise AttestationMalformed(
            f"attestation payload: 'pcrs' must be a map of 1..{MAX_PCRS} entries"
        )
    out: dict[int, bytes] = {}
    for index, pcr in value.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < MAX_PCRS:
            raise AttestationMalformed(f"attestation payload: PCR index {index!r} not in 0..31")
        if not isinstance(pcr, bytes) or len(pcr) not in PCR_SIZES:
            raise AttestationMalformed(
                f"attestation payload: PCR{index} must be a byte string of 32, 48 or 64 bytes"
            )
        out[index] = pcr
    return PcrSet(values=out)
