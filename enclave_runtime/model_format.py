"""CIMF v1: chunked AES-256-GCM encryption of model files (STREAM construction).

::

    file   = header || chunk_0 || ... || chunk_{n-1}
    header = "CIMF" | version u16 | alg u16 | header_length u32 | chunk_size u32
             | plaintext_length u64 | chunk_count u64 | file_salt[32] | plaintext_sha256[32]
             | model_id s16 | model_version s16 | kms_key_id s16 | wrapped_key b16
             | context_count u16 | (key s16, value s16) * count     (keys sorted, unique)
             | header_tag[16]
    (all integers big-endian; s16/b16 = u16 length + UTF-8 text / bytes)

    prk      = HKDF-Extract(salt=file_salt, ikm=data_key)          (HKDF-SHA-256)
    k_header = HKDF-Expand(prk, "cimf v1 header", 32)
    k_chunk  = HKDF-Expand(prk, "cimf v1 chunk", 32)
    header_tag = AES-256-GCM(k_header, nonce=0^12, pt="", aad=header bytes before the tag)
    H        = SHA-256(header bytes including the tag)
    chunk_i  = AES-256-GCM(k_chunk, nonce=BE96(i),
                           aad=H || BE64(i) || BE64(chunk_count) || final(1 byte)) -> ct || tag

``wrapped_key`` is the KMS ``CiphertextBlob`` of the data key (empty when the key is a
local file) and ``encryption_context`` the context KMS must be called with.

The reader authenticates the header before it looks at any chunk, checks that exactly
``chunk_count`` chunks follow and nothing else, and hands out the plaintext only when
every chunk's tag verified and the SHA-256 of the whole plaintext equals the header's
digest and, when given, the digest pinned by the caller.  On any failure the private
output buffer is zeroed (OpenSSL's ``decrypt_into`` writes a chunk's plaintext before it
checks the tag) and :class:`~enclave_runtime.errors.ModelTampered` is raised: nothing
partial, and nothing unauthenticated, is ever served.
"""

from __future__ import annotations

import dataclasses
import hashlib
import mmap
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from enclave_runtime.errors import InvalidInput, KeyFileError, ModelTampered

MAGIC = b"CIMF"
FORMAT_VERSION = 1
ALG_AES256GCM_HKDF_SHA256 = 1
ALG_NAME = "AES-256-GCM/HKDF-SHA256"
TAG_SIZE = 16
SALT_SIZE = 32
KEY_SIZE = 32
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 4096
MAX_CHUNK_SIZE = 16 << 20
MAX_HEADER_SIZE = 64 << 10
MAX_TEXT = 1024  # model id, version, key id, context keys and values (bytes)
MAX_WRAPPED_KEY = 6144  # the KMS CiphertextBlob limit
MAX_CONTEXT_PAIRS = 32
DEFAULT_MAX_PLAINTEXT = 16 << 30
INFO_SCHEMA = "enclave-audit/model-file-info/v1"

_FIXED = struct.Struct(">4sHHIIQQ32s32s")  # through plaintext_sha256
_PREFIX = struct.Struct(">4sHHI")  # enough to learn the header length


def ciphertext_chunk_len(plain_len: int) -> int:
    return plain_len + TAG_SIZE


@dataclass(frozen=True)
class ModelHeader:
    """A parsed header. ``raw`` holds its exact bytes (tag included)."""

    chunk_size: int
    plaintext_length: int
    chunk_count: int
    file_salt: bytes
    plaintext_sha256: bytes
    model_id: str
    model_version: str
    kms_key_id: str
    wrapped_key: bytes
    encryption_context: tuple[tuple[str, str], ...]
    raw: bytes

    @property
    def header_length(self) -> int:
        return len(self.raw)

    @property
    def digest(self) -> bytes:
        """H: SHA-256 of the whole header, bound into every chunk's AAD."""
        return hashlib.sha256(self.raw).digest()

    def chunk_plain_len(self, index: int) -> int:
        if index < self.chunk_count - 1:
            return self.chunk_size
        return self.plaintext_length - (self.chunk_count - 1) * self.chunk_size

    def chunk_offset(self, index: int) -> int:
        return self.header_length + index * ciphertext_chunk_len(self.chunk_size)

    @property
    def file_length(self) -> int:
        last = self.chunk_count - 1
        return self.chunk_offset(last) + ciphertext_chunk_len(self.chunk_plain_len(last))

    def chunk_aad(self, index: int, digest: bytes | None = None) -> bytes:
        final = 1 if index == self.chunk_count - 1 else 0
        h = digest if digest is not None else self.digest
        return h + struct.pack(">QQB", index, self.chunk_count, final)

    def info(self) -> ModelFileInfo:
        return ModelFileInfo(
            schema=INFO_SCHEMA,
            format_version=FORMAT_VERSION,
            algorithm=ALG_NAME,
            header_length=self.header_length,
            chunk_size=self.chunk_size,
            chunk_count=self.chunk_count,
            plaintext_length=self.plaintext_length,
            file_length=self.file_length,
            plaintext_sha256=self.plaintext_sha256.hex(),
            header_sha256=self.digest.hex(),
            model_id=self.model_id,
            model_version=self.model_version,
            kms_key_id=self.kms_key_id,
            wrapped_key_length=len(self.wrapped_key),
            encryption_context=dict(self.encryption_context),
        )


@dataclass(frozen=True)
class ModelFileInfo:
    """What ``enclave-audit model info`` prints (unauthenticated until decrypted).

    A plain dataclass, not pydantic: this module runs inside the enclave image, which
    carries only the standard library, NumPy and ``cryptography``.
    """

    schema: str
    format_version: int
    algorithm: str
    header_length: int
    chunk_size: int
    chunk_count: int
    plaintext_length: int
    file_length: int
    plaintext_sha256: str
    header_sha256: str
    model_id: str
    model_version: str
    kms_key_id: str
    wrapped_key_length: int
    encryption_context: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, ``schema`` first."""
        return dataclasses.asdict(self)


# -- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileKeys:
    header: AESGCM
    chunk: bytes  # raw key, so worker processes can rebuild the cipher


def derive_keys(data_key: bytes, file_salt: bytes) -> FileKeys:
    if len(data_key) != KEY_SIZE:
        raise KeyFileError(f"model data key must be {KEY_SIZE} bytes, got {len(data_key)}")
    extract = hmac.HMAC(file_salt, hashes.SHA256())  # HKDF-Extract(salt, ikm)
    extract.update(data_key)
    prk = extract.finalize()
    k_hdr = HKDFExpand(hashes.SHA256(), 32, b"cimf v1 header").derive(prk)
    k_ch = HKDFExpand(hashes.SHA256(), 32, b"cimf v1 chunk").derive(prk)
    return FileKeys(header=AESGCM(k_hdr), chunk=k_ch)


# -- header -------------------------------------------------------------------------------


def _pack_text(value: str, field: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > MAX_TEXT:
        raise InvalidInput(f"model header: {field} longer than {MAX_TEXT} bytes")
    return struct.pack(">H", len(raw)) + raw


def build_header(
    *,
    data_key: bytes,
    plaintext_length: int,
    plaintext_sha256: bytes,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    model_id: str = "",
    model_version: str = "",
    kms_key_id: str = "",
    wrapped_key: bytes = b"",
    encryption_context: Mapping[str, str] | None = None,
    file_salt: bytes | None = None,
) -> tuple[ModelHeader, FileKeys]:
    """A fresh header (random salt unless given) and its keys."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidInput(
            f"model: chunk size {chunk_size} outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}"
        )
    if len(wrapped_key) > MAX_WRAPPED_KEY:
        raise InvalidInput(f"model header: wrapped key longer than {MAX_WRAPPED_KEY} bytes")
    context = sorted((encryption_context or {}).items())
    if len(context) > MAX_CONTEXT_PAIRS:
        raise InvalidInput(f"model header: more than {MAX_CONTEXT_PAIRS} encryption-context pairs")
    salt = file_salt if file_salt is not None else os.urandom(SALT_SIZE)
    chunk_count = max(1, -(-plaintext_length // chunk_size))
    body = b"".join(
        [
            _pack_text(model_id, "model_id"),
            _pack_text(model_version, "model_version"),
            _pack_text(kms_key_id, "kms_key_id"),
            struct.pack(">H", len(wrapped_key)) + wrapped_key,
            struct.pack(">H", len(context)),
            *(_pack_text(k, "context key") + _pack_text(v, "context value") for k, v in context),
        ]
    )
    total = _FIXED.size + len(body) + TAG_SIZE
    fixed = _FIXED.pack(
        MAGIC,
        FORMAT_VERSION,
        ALG_AES256GCM_HKDF_SHA256,
        total,
        chunk_size,
        plaintext_length,
        chunk_count,
        salt,
        plaintext_sha256,
    )
    keys = derive_keys(data_key, salt)
    unsigned = fixed + body
    tag = keys.header.encrypt(b"\0" * 12, b"", unsigned)
    header = parse_header(unsigned + tag)
    return header, keys


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = _FIXED.size

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data) - TAG_SIZE:
            raise ModelTampered(f"model header: {field} runs past the header")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, field: str) -> int:
        value: int = struct.unpack(">H", self.take(2, field))[0]
        return value

    def text(self, field: str) -> str:
        n = self.u16(field)
        if n > MAX_TEXT:
            raise ModelTampered(f"model header: {field} longer than {MAX_TEXT} bytes")
        try:
            return self.take(n, field).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelTampered(f"model header: {field} is not UTF-8") from None


def _check_prefix(prefix: bytes, what: str) -> int:
    if len(prefix) < _PREFIX.size:
        raise InvalidInput(f"{what}: too short to be an encrypted model file")
    magic, version, alg, length = _PREFIX.unpack(prefix[: _PREFIX.size])
    if magic != MAGIC:
        raise InvalidInput(f"{what}: not an encrypted model file (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise InvalidInput(f"{what}: unsupported model file version {version}")
    if alg != ALG_AES256GCM_HKDF_SHA256:
        raise InvalidInput(f"{what}: unsupported model file algorithm {alg}")
    if not _FIXED.size + 5 * 2 + TAG_SIZE <= length <= MAX_HEADER_SIZE:
        raise ModelTampered(f"{what}: header length {length} out of range")
    return int(length)


def parse_header(data: bytes, *, what: str = "model file") -> ModelHeader:
    """Parse (not authenticate) exactly one header's bytes."""
    length = _check_prefix(data, what)
    if len(data) != length:
        raise ModelTampered(f"{what}: header is {len(data)} bytes, declares {length}")
    (_, _, _, _, chunk_size, plain_len, count, salt, digest) = _FIXED.unpack(data[: _FIXED.size])
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ModelTampered(f"{what}: chunk size {chunk_size} out of range")
    if count != max(1, -(-plain_len // chunk_size)):
        raise ModelTampered(f"{what}: chunk count {count} does not fit length {plain_len}")
    r = _Reader(data)
    model_id = r.text("model_id")
    model_version = r.text("model_version")
    kms_key_id = r.text("kms_key_id")
    n_wrapped = r.u16("wrapped_key")
    if n_wrapped > MAX_WRAPPED_KEY:
        raise ModelTampered(f"{what}: wrapped key longer than {MAX_WRAPPED_KEY} bytes")
    wrapped = r.take(n_wrapped, "wrapped_key")
    n_ctx = r.u16("encryption_context")
    if n_ctx > MAX_CONTEXT_PAIRS:
        raise ModelTampered(f"{what}: {n_ctx} encryption-context pairs (limit {MAX_CONTEXT_PAIRS})")
    context = tuple((r.text("context key"), r.text("context value")) for _ in range(n_ctx))
    keys = [k for k, _ in context]
    if keys != sorted(set(keys)):
        raise ModelTampered(f"{what}: encryption-context keys not sorted and unique")
    if r.pos != length - TAG_SIZE:
        raise ModelTampered(f"{what}: {length - TAG_SIZE - r.pos} unexpected bytes in the header")
    return ModelHeader(
        chunk_size=chunk_size,
        plaintext_length=plain_len,
        chunk_count=count,
        file_salt=salt,
        plaintext_sha256=digest,
        model_id=model_id,
        model_version=model_version,
        kms_key_id=kms_key_id,
        wrapped_key=wrapped,
        encryption_context=context,
        raw=bytes(data),
    )


def read_header(stream: IO[bytes], *, what: str = "model file") -> ModelHeader:
    """Read and parse the header from the start of ``stream`` (bounded read)."""
    prefix = stream.read(_PREFIX.size)
    length = _check_prefix(prefix, what)
    rest = stream.read(length - _PREFIX.size)
    if len(rest) != length - _PREFIX.size:
        raise ModelTampered(f"{what}: truncated inside the header")
    return parse_header(prefix + rest, what=what)


def authenticate_header(
    header: ModelHeader, data_key: bytes, *, what: str = "model file"
) -> FileKeys:
    """Verify the header tag with keys derived from ``data_key``; return the keys."""
    keys = derive_keys(data_key, header.file_salt)
    try:
        keys.header.decrypt(b"\0" * 12, header.raw[-TAG_SIZE:], header.raw[:-TAG_SIZE])
    except InvalidTag:
        raise ModelTampered(
            f"{what}: header authentication failed (wrong data key or modified header)"
        ) from None
    return keys


# -- decryption ---------------------------------------------------------------------------


def open_chunk(cipher: AESGCM, index: int, ct: memoryview, aad: bytes, dest: memoryview) -> None:
    """Authenticate and decrypt one chunk into ``dest`` (raises InvalidTag)."""
    nonce = index.to_bytes(12, "big")
    into = getattr(cipher, "decrypt_into", None)  # recent cryptography; Debian 12's 38 lacks it
    if into is not None:
        into(nonce, ct, aad, dest)
    else:
        dest[:] = cipher.decrypt(nonce, bytes(ct), aad)


def refuse(buf: bytearray | mmap.mmap | None, message: str) -> ModelTampered:
    if buf is not None and len(buf):
        buf[:] = bytes(len(buf))  # nothing partial survives
    return ModelTampered(message)


def check_digest(
    header: ModelHeader, actual: bytes, expected_sha256: bytes | None, what: str
) -> str | None:
    if actual != header.plaintext_sha256:
        return f"{what}: plaintext SHA-256 {actual.hex()} does not match its header"
    if expected_sha256 is not None and actual != expected_sha256:
        return f"{what}: model SHA-256 {actual.hex()} is not the pinned {expected_sha256.hex()}"
    return None


def check_limits(
    header: ModelHeader, max_plaintext: int, expected: bytes | None, what: str
) -> None:
    if header.plaintext_length > max_plaintext:
        raise InvalidInput(
            f"{what}: plaintext of {header.plaintext_length} bytes exceeds "
            f"the {max_plaintext}-byte limit"
        )
    if expected is not None and len(expected) != 32:
        raise InvalidInput("pinned model digest must be a 32-byte SHA-256")


def decrypt_model(
    stream: IO[bytes],
    data_key: bytes,
    *,
    expected_sha256: bytes | None = None,
    max_plaintext: int = DEFAULT_MAX_PLAINTEXT,
    what: str = "model file",
    progress: Callable[[int], None] | None = None,
) -> bytearray:
    """Decrypt a whole CIMF stream; the plaintext is returned only if all of it verified."""
    header = read_header(stream, what=what)
    check_limits(header, max_plaintext, expected_sha256, what)
    keys = authenticate_header(header, data_key, what=what)
    cipher = AESGCM(keys.chunk)
    h = header.digest
    out = bytearray(header.plaintext_length)
    view = memoryview(out)
    ct = bytearray(ciphertext_chunk_len(header.chunk_size))
    ct_view = memoryview(ct)
    hasher = hashlib.sha256()
    pos = 0
    for i in range(header.chunk_count):
        n = header.chunk_plain_len(i)
        want = ciphertext_chunk_len(n)
        got = _read_exact(stream, ct_view[:want])
        if got != want:
            view.release()
            raise refuse(out, f"{what}: truncated: chunk {i} of {header.chunk_count} is incomplete")
        try:
            open_chunk(cipher, i, ct_view[:want], header.chunk_aad(i, h), view[pos : pos + n])
        except InvalidTag:
            view.release()
            raise refuse(
                out,
                f"{what}: chunk {i} of {header.chunk_count} failed authentication "
                "(modified, reordered, spliced from another file, or wrong key)",
            ) from None
        hasher.update(view[pos : pos + n])
        pos += n
        if progress is not None:
            progress(want)
    if stream.read(1):
        view.release()
        raise refuse(out, f"{what}: data after the final chunk")
    problem = check_digest(header, hasher.digest(), expected_sha256, what)
    view.release()
    if problem is not None:
        raise refuse(out, problem)
    return out


def _read_exact(stream: IO[bytes], target: memoryview) -> int:
    got = 0
    while got < len(target):
        n = stream.readinto(target[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got
