"""CMS EnvelopedData (RFC 5652) exactly as AWS KMS returns ``CiphertextForRecipient``.

KMS answers an attested ``Decrypt``/``GenerateDataKey``/``GenerateRandom`` with a
BER-encoded ``ContentInfo`` of type EnvelopedData:

* one ``KeyTransRecipientInfo`` (version 2, a 32-byte subjectKeyIdentifier) whose
  content-encryption key is wrapped with RSAES-OAEP, SHA-256 for both the OAEP hash
  and MGF1, empty label, parameters written out explicitly;
* the content encrypted with AES-256-CBC (16-byte IV, PKCS#7 padding);
* indefinite lengths on the outer structures and the encrypted content as a
  constructed ``[0]`` holding OCTET STRING pieces of at most 1000 bytes.

:func:`build_enveloped_data` emits that layout byte for byte (the reference KMS uses
it); the subjectKeyIdentifier, which AWS does not document, is our choice: SHA-256
of the recipient's SubjectPublicKeyInfo DER.  :func:`open_enveloped_data` is the
enclave side: a narrow, bounded BER reader that accepts definite and indefinite
lengths and constructed OCTET STRINGs, exactly one RSA key-transport recipient
(identified either way), OAEP-SHA-256 only and AES-256-CBC only.  Everything else
is refused with :class:`~enclave_runtime.errors.ProtocolError`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from enclave_runtime.errors import ProtocolError

__all__ = [
    "MAX_CMS_SIZE",
    "EnvelopedParts",
    "build_enveloped_data",
    "open_enveloped_data",
    "parse_enveloped_data",
    "subject_key_identifier",
]

#: the largest CiphertextForRecipient we accept (KMS plaintexts are at most 4096 bytes).
MAX_CMS_SIZE = 64 * 1024
#: how deep the BER tree may nest (the real structure is 8 levels deep).
_MAX_DEPTH = 12
#: how many TLVs one document may hold (a real one has about 30).
_MAX_NODES = 512
#: content split as AWS does (RustCrypto's samples: 1000+1000+...+rest).
_PIECE = 1000
_MIN_RSA_BITS = 2048

# DER content bytes of the object identifiers involved.
_OID_ENVELOPED_DATA = bytes.fromhex("2a864886f70d010703")  # 1.2.840.113549.1.7.3
_OID_DATA = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1
_OID_RSAES_OAEP = bytes.fromhex("2a864886f70d010107")  # 1.2.840.113549.1.1.7
_OID_MGF1 = bytes.fromhex("2a864886f70d010108")  # 1.2.840.113549.1.1.8
_OID_P_SPECIFIED = bytes.fromhex("2a864886f70d010109")  # 1.2.840.113549.1.1.9
_OID_SHA256 = bytes.fromhex("608648016503040201")  # 2.16.840.1.101.3.4.2.1
_OID_AES256_CBC = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42

# universal tags
_INTEGER, _OCTET_STRING, _NULL, _OID, _SEQUENCE, _SET = 0x02, 0x04, 0x05, 0x06, 0x10, 0x11
_UNIVERSAL, _CONTEXT = 0, 2


# --- BER reading ------------------------------------------------------------


@dataclass(frozen=True)
class _Tlv:
    cls: int
    constructed: bool
    tag: int
    content: bytes  # primitive contents (empty for constructed)
    children: tuple[_Tlv, ...]

    def is_universal(self, tag: int) -> bool:
        return self.cls == _UNIVERSAL and self.tag == tag

    def is_context(self, tag: int) -> bool:
        return self.cls == _CONTEXT and self.tag == tag

    def describe(self) -> str:
        kind = {0: "universal", 1: "application", 2: "context", 3: "private"}[self.cls]
        return f"{kind} tag {self.tag}"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.nodes = 0

    def parse(self, pos: int, end: int, depth: int) -> tuple[_Tlv, int]:
        """One TLV starting at ``pos`` that must lie within ``end``; returns it and its end."""
        if depth > _MAX_DEPTH:
            raise ProtocolError("CMS: structure nested too deeply")
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise ProtocolError("CMS: too many elements")
        data = self.data
        if pos >= end:
            raise ProtocolError("CMS: truncated (expected an element)")
        ident = data[pos]
        pos += 1
        cls, constructed, tag = ident >> 6, bool(ident & 0x20), ident & 0x1F
        if tag == 0x1F:
            raise ProtocolError("CMS: high tag numbers are not used by EnvelopedData")
        if pos >= end:
            raise ProtocolError("CMS: truncated (missing length)")
        first = data[pos]
        pos += 1
        if first == 0x80:
            if not constructed:
                raise ProtocolError("CMS: indefinite length on a primitive element")
            children: list[_Tlv] = []
            while True:
                if pos + 2 > end:
                    raise ProtocolError("CMS: truncated (missing end-of-contents)")
                if data[pos] == 0 and data[pos + 1] == 0:
                    return _Tlv(cls, True, tag, b"", tuple(children)), pos + 2
                child, pos = self.parse(pos, end, depth + 1)
                children.append(child)
        if first & 0x80:
            count = first & 0x7F
            if count > 4:
                raise ProtocolError("CMS: length field too long")
            if pos + count > end:
                raise ProtocolError("CMS: truncated (length field)")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        else:
            length = first
        stop = pos + length
        if stop > end:
            raise ProtocolError("CMS: element runs past the end of its container")
        if not constructed:
            if ident == 0 and length == 0:
                raise ProtocolError("CMS: unexpected end-of-contents marker")
            return _Tlv(cls, False, tag, data[pos:stop], ()), stop
        children = []
        while pos < stop:
            child, pos = self.parse(pos, stop, depth + 1)
            children.append(child)
        return _Tlv(cls, True, tag, b"", tuple(children)), stop


def _parse_ber(data: bytes) -> _Tlv:
    if len(data) > MAX_CMS_SIZE:
        raise ProtocolError(f"CMS: {len(data)} bytes is larger than the {MAX_CMS_SIZE}-byte limit")
    reader = _Reader(data)
    root, end = reader.parse(0, len(data), 0)
    if end != len(data):
        raise ProtocolError(f"CMS: {len(data) - end} trailing bytes after the structure")
    return root


def _expect(node: _Tlv, tag: int, what: str, *, constructed: bool | None = None) -> _Tlv:
    if not node.is_universal(tag):
        raise ProtocolError(f"CMS: {what}: unexpected {node.describe()}")
    if constructed is not None and node.constructed != constructed and tag != _OCTET_STRING:
        raise ProtocolError(f"CMS: {what}: wrong primitive/constructed form")
    return node


def _seq(node: _Tlv, what: str) -> tuple[_Tlv, ...]:
    if not (node.is_universal(_SEQUENCE) and node.constructed):
        raise ProtocolError(f"CMS: {what}: expected a SEQUENCE, found {node.describe()}")
    return node.children


def _octets(node: _Tlv, what: str) -> bytes:
    """Primitive or (BER) constructed OCTET STRING contents, with implicit tags allowed."""
    if not node.constructed:
        return node.content
    parts: list[bytes] = []
    for child in node.children:
        if not child.is_universal(_OCTET_STRING) or child.constructed:
            raise ProtocolError(f"CMS: {what}: constructed string holds a {child.describe()}")
        parts.append(child.content)
    return b"".join(parts)


def _oid_text(content: bytes) -> str:
    if not content:
        return "(empty)"
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2) if arcs else 0
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]]) if arcs else "?"


def _expect_oid(node: _Tlv, oid: bytes, what: str) -> None:
    if not node.is_universal(_OID) or node.constructed:
        raise ProtocolError(f"CMS: {what}: expected an OBJECT IDENTIFIER")
    if node.content != oid:
        raise ProtocolError(
            f"CMS: {what}: unsupported algorithm or type {_oid_text(node.content)} "
            f"(expected {_oid_text(oid)})"
        )


def _small_int(node: _Tlv, what: str) -> int:
    if not node.is_universal(_INTEGER) or node.constructed or not 1 <= len(node.content) <= 2:
        raise ProtocolError(f"CMS: {what}: expected a small INTEGER")
    return int.from_bytes(node.content, "big", signed=True)


def _expect_sha256_alg(node: _Tlv, what: str) -> None:
    fields = _seq(node, what)
    if not fields or len(fields) > 2:
        raise ProtocolError(f"CMS: {what}: malformed AlgorithmIdentifier")
    _expect_oid(fields[0], _OID_SHA256, what)
    if len(fields) == 2 and not (fields[1].is_universal(_NULL) and fields[1].content == b""):
        raise ProtocolError(f"CMS: {what}: SHA-256 parameters must be absent or NULL")


def _check_oaep_params(node: _Tlv) -> None:
    """RSAES-OAEP-params: SHA-256, MGF1(SHA-256), empty label. Defaults (SHA-1) refused."""
    fields = _seq(node, "RSAES-OAEP parameters")
    seen: set[int] = set()
    for field in fields:
        if field.cls != _CONTEXT or not field.constructed or len(field.children) != 1:
            raise ProtocolError("CMS: RSAES-OAEP parameters: malformed field")
        if field.tag in seen or field.tag > 2:
            raise ProtocolError("CMS: RSAES-OAEP parameters: unexpected or repeated field")
        seen.add(field.tag)
        inner = field.children[0]
        if field.tag == 0:
            _expect_sha256_alg(inner, "OAEP hash")
        elif field.tag == 1:
            mgf = _seq(inner, "OAEP mask generation function")
            if len(mgf) != 2:
                raise ProtocolError("CMS: OAEP mask generation function: malformed")
            _expect_oid(mgf[0], _OID_MGF1, "OAEP mask generation function")
            _expect_sha256_alg(mgf[1], "MGF1 hash")
        else:
            source = _seq(inner, "OAEP label source")
            if len(source) != 2:
                raise ProtocolError("CMS: OAEP label source: malformed")
            _expect_oid(source[0], _OID_P_SPECIFIED, "OAEP label source")
            if _octets(_expect(source[1], _OCTET_STRING, "OAEP label"), "OAEP label"):
                raise ProtocolError("CMS: OAEP label must be empty")
    if 0 not in seen or 1 not in seen:
        raise ProtocolError(
            "CMS: RSAES-OAEP parameters must name SHA-256 and MGF1-SHA-256 explicitly "
            "(the SHA-1 defaults are refused)"
        )


@dataclass(frozen=True)
class EnvelopedParts:
    """The pieces of a parsed EnvelopedData (nothing decrypted yet)."""

    version: int
    #: the recipient identifier: 32-byte SKI (version 2) or the issuerAndSerialNumber DER-ish
    #: contents (version 0); informational only, never trusted.
    recipient_id: bytes
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes


def parse_enveloped_data(ber: bytes) -> EnvelopedParts:
    """Parse (but do not decrypt) a ``CiphertextForRecipient``; strict and bounded."""
    if not isinstance(ber, bytes | bytearray | memoryview):
        raise ProtocolError("CMS: expected bytes")
    root = _parse_ber(bytes(ber))
    content_info = _seq(root, "ContentInfo")
    if len(content_info) != 2:
        raise ProtocolError("CMS: ContentInfo must have a type and content")
    _expect_oid(content_info[0], _OID_ENVELOPED_DATA, "ContentInfo type")
    wrapper = content_info[1]
    if not wrapper.is_context(0) or not wrapper.constructed or len(wrapper.children) != 1:
        raise ProtocolError("CMS: ContentInfo content must be [0] EXPLICIT")
    enveloped = _seq(wrapper.children[0], "EnvelopedData")
    if len(enveloped) != 3:
        raise ProtocolError(
            "CMS: EnvelopedData must hold version, recipientInfos and encryptedContentInfo only "
            "(originatorInfo and unprotectedAttrs are not used)"
        )
    version = _small_int(enveloped[0], "EnvelopedData version")
    if version not in (0, 2):
        raise ProtocolError(f"CMS: EnvelopedData version {version} is not supported (0 or 2)")
    recipients = enveloped[1]
    if not (recipients.is_universal(_SET) and recipients.constructed):
        raise ProtocolError("CMS: recipientInfos must be a SET")
    if len(recipients.children) != 1:
        raise ProtocolError(
            f"CMS: exactly one recipient expected, found {len(recipients.children)}"
        )
    ktri = recipients.children[0]
    if not ktri.is_universal(_SEQUENCE):
        raise ProtocolError(
            f"CMS: only KeyTransRecipientInfo is supported, found {ktri.describe()}"
        )
    fields = _seq(ktri, "KeyTransRecipientInfo")
    if len(fields) != 4:
        raise ProtocolError("CMS: KeyTransRecipientInfo must have four fields")
    ktri_version = _small_int(fields[0], "KeyTransRecipientInfo version")
    rid = fields[1]
    if ktri_version == 2:
        if not rid.is_context(0):
            raise ProtocolError("CMS: version-2 recipient must use a subjectKeyIdentifier")
        recipient_id = _octets(rid, "subjectKeyIdentifier")
    elif ktri_version == 0:
        if not rid.is_universal(_SEQUENCE):
            raise ProtocolError("CMS: version-0 recipient must use issuerAndSerialNumber")
        recipient_id = b""
    else:
        raise ProtocolError(f"CMS: KeyTransRecipientInfo version {ktri_version} is not supported")
    algorithm = _seq(fields[2], "keyEncryptionAlgorithm")
    if len(algorithm) != 2:
        raise ProtocolError("CMS: keyEncryptionAlgorithm must carry RSAES-OAEP parameters")
    _expect_oid(algorithm[0], _OID_RSAES_OAEP, "keyEncryptionAlgorithm")
    _check_oaep_params(algorithm[1])
    encrypted_key = _octets(_expect(fields[3], _OCTET_STRING, "encryptedKey"), "encryptedKey")
    if not encrypted_key:
        raise ProtocolError("CMS: encryptedKey is empty")

    eci = _seq(enveloped[2], "EncryptedContentInfo")
    if len(eci) != 3:
        raise ProtocolError("CMS: EncryptedContentInfo must carry the encrypted content")
    _expect_oid(eci[0], _OID_DATA, "EncryptedContentInfo type")
    cipher = _seq(eci[1], "contentEncryptionAlgorithm")
    if len(cipher) != 2:
        raise ProtocolError("CMS: contentEncryptionAlgorithm must carry an IV")
    _expect_oid(cipher[0], _OID_AES256_CBC, "contentEncryptionAlgorithm")
    iv = _octets(_expect(cipher[1], _OCTET_STRING, "AES-CBC IV"), "AES-CBC IV")
    if len(iv) != 16:
        raise ProtocolError(f"CMS: AES-CBC IV must be 16 bytes, found {len(iv)}")
    if not eci[2].is_context(0):
        raise ProtocolError("CMS: encryptedContent must be [0] IMPLICIT OCTET STRING")
    ciphertext = _octets(eci[2], "encryptedContent")
    if not ciphertext or len(ciphertext) % 16:
        raise ProtocolError(
            f"CMS: encryptedContent length {len(ciphertext)} is not a positive multiple of 16"
        )
    return EnvelopedParts(version, recipient_id, encrypted_key, iv, ciphertext)


def open_enveloped_data(der: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """Decrypt a ``CiphertextForRecipient`` with the enclave's RSA private key."""
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ProtocolError("CMS: the recipient key must be an RSA private key")
    parts = parse_enveloped_data(der)
    if len(parts.encrypted_key) != private_key.key_size // 8:
        raise ProtocolError(
            f"CMS: encryptedKey is {len(parts.encrypted_key)} bytes; the "
            f"{private_key.key_size}-bit recipient key expects {private_key.key_size // 8}"
        )
    try:
        cek = private_key.decrypt(parts.encrypted_key, _oaep())
    except ValueError:
        raise ProtocolError(
            "CMS: the content key does not decrypt with this private key "
            "(wrong recipient or tampered encryptedKey)"
        ) from None
    if len(cek) != 32:
        raise ProtocolError(f"CMS: content key is {len(cek)} bytes, AES-256 needs 32")
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(parts.iv)).decryptor()
    padded = decryptor.update(parts.ciphertext) + decryptor.finalize()
    pad = padded[-1]
    if not 1 <= pad <= 16 or padded[-pad:] != bytes([pad]) * pad:
        raise ProtocolError("CMS: content padding is invalid (tampered content or IV)")
    return padded[:-pad]


# --- writing ------------------------------------------------------------------


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def _indefinite(tag: int, *parts: bytes) -> bytes:
    return bytes([tag, 0x80]) + b"".join(parts) + b"\x00\x00"


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _load_public(key: rsa.RSAPublicKey | bytes) -> rsa.RSAPublicKey:
    if isinstance(key, rsa.RSAPublicKey):
        public = key
    else:
        try:
            loaded = serialization.load_der_public_key(bytes(key))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ProtocolError(
                "CMS: recipient public key is not a DER SubjectPublicKeyInfo"
            ) from None
        if not isinstance(loaded, rsa.RSAPublicKey):
            raise ProtocolError("CMS: recipient public key is not an RSA key")
        public = loaded
    if public.key_size < _MIN_RSA_BITS:
        raise ProtocolError(
            f"CMS: recipient RSA key has {public.key_size} bits; at least {_MIN_RSA_BITS} required"
        )
    return public


def subject_key_identifier(public_key: rsa.RSAPublicKey) -> bytes:
    """Our 32-byte recipient identifier: SHA-256 of the SubjectPublicKeyInfo DER."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


_SHA256_ALG = _der(0x30, _der(_OID, _OID_SHA256) + b"\x05\x00")
_OAEP_ALG = _der(
    0x30,
    _der(_OID, _OID_RSAES_OAEP)
    + _der(
        0x30,
        _der(0xA0, _SHA256_ALG) + _der(0xA1, _der(0x30, _der(_OID, _OID_MGF1) + _SHA256_ALG)),
    ),
)


def build_enveloped_data(plaintext: bytes, recipient_public_key: rsa.RSAPublicKey | bytes) -> bytes:
    """Encrypt ``plaintext`` to an RSA key in the BER layout AWS KMS emits.

    ``recipient_public_key`` is a key object or SubjectPublicKeyInfo DER (the
    attestation document's ``public_key``).
    """
    public = _load_public(recipient_public_key)
    cek = os.urandom(32)
    iv = os.urandom(16)
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(bytes(plaintext) + bytes([pad]) * pad) + encryptor.finalize()
    encrypted_key = public.encrypt(cek, _oaep())

    ktri = _der(
        0x30,
        _der(_INTEGER, b"\x02")
        + _der(0x80, subject_key_identifier(public))
        + _OAEP_ALG
        + _der(_OCTET_STRING, encrypted_key),
    )
    pieces = b"".join(
        _der(_OCTET_STRING, ciphertext[i : i + _PIECE]) for i in range(0, len(ciphertext), _PIECE)
    )
    encrypted_content_info = _indefinite(
        0x30,
        _der(_OID, _OID_DATA),
        _der(0x30, _der(_OID, _OID_AES256_CBC) + _der(_OCTET_STRING, iv)),
        _indefinite(0xA0, pieces),
    )
    enveloped = _indefinite(0x30, _der(_INTEGER, b"\x02"), _der(0x31, ktri), encrypted_content_info)
    return _indefinite(0x30, _der(_OID, _OID_ENVELOPED_DATA), _indefinite(0xA0, enveloped))
