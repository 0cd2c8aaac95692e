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
checks the tag) and :class:`~enclave_audit.errors.ModelTampered` is raised: nothing
partial, and nothing unauthenticated, is ever served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import mmap
import multiprocessing
import os
import resource
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from enclave_audit.errors import InvalidInput, KeyFileError, ModelTampered
from enclave_audit.fsutil import atomic_write, open_input, read_bytes

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

_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; older kernels refuse it (EINVAL) harmlessly
_FIXED = struct.Struct(">4sHHIIQQ32s32s")  # through plaintext_sha256
_PREFIX = struct.Struct(">4sHHI")  # enough to learn the header length


def _ciphertext_chunk_len(plain_len: int) -> int:
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
        return self.header_length + index * _ciphertext_chunk_len(self.chunk_size)

    @property
    def file_length(self) -> int:
        last = self.chunk_count - 1
        return self.chunk_offset(last) + _ciphertext_chunk_len(self.chunk_plain_len(last))

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


def load_data_key(path: Path) -> bytes:
    """A local data-key file: 32 raw bytes, or 64 hex digits (whitespace ignored)."""
    raw = read_bytes(path, limit=4096)
    if len(raw) == KEY_SIZE:
        return raw
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise KeyFileError(f"{path}: a data key file holds 32 raw bytes or 64 hex digits")
    return key


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


# -- encryption ---------------------------------------------------------------------------


def encrypt_model(
    src: Path,
    dst: Path,
    data_key: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    model_id: str = "",
    model_version: str = "",
    kms_key_id: str = "",
    wrapped_key: bytes = b"",
    encryption_context: Mapping[str, str] | None = None,
) -> ModelHeader:
    """Encrypt ``src`` into ``dst`` (written atomically). Reads ``src`` twice: hash, then seal."""
    digest = hashlib.sha256()
    length = 0
    with open_input(src) as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
            length += len(block)
    header, keys = build_header(
        data_key=data_key,
        plaintext_length=length,
        plaintext_sha256=digest.digest(),
        chunk_size=chunk_size,
        model_id=model_id,
        model_version=model_version,
        kms_key_id=kms_key_id,
        wrapped_key=wrapped_key,
        encryption_context=encryption_context,
    )
    cipher = AESGCM(keys.chunk)
    h = header.digest
    check = hashlib.sha256()
    with open_input(src) as fh, atomic_write(dst) as out:
        out.write(header.raw)
        for i in range(header.chunk_count):
            want = header.chunk_plain_len(i)
            block = fh.read(want)
            if len(block) != want:
                raise InvalidInput(f"{src}: changed while it was being encrypted")
            check.update(block)
            out.write(cipher.encrypt(i.to_bytes(12, "big"), block, header.chunk_aad(i, h)))
        if fh.read(1) or check.digest() != header.plaintext_sha256:
            raise InvalidInput(f"{src}: changed while it was being encrypted")
    return header


# -- decryption ---------------------------------------------------------------------------


def _open_chunk(cipher: AESGCM, index: int, ct: memoryview, aad: bytes, dest: memoryview) -> None:
    """Authenticate and decrypt one chunk into ``dest`` (raises InvalidTag)."""
    nonce = index.to_bytes(12, "big")
    into = getattr(cipher, "decrypt_into", None)  # recent cryptography; Debian 12's 38 lacks it
    if into is not None:
        into(nonce, ct, aad, dest)
    else:
        dest[:] = cipher.decrypt(nonce, bytes(ct), aad)


@dataclass
class DecryptStats:
    """Wall-clock seconds of each phase of one decryption (for the benchmark)."""

    workers: int = 1
    header_seconds: float = 0.0
    allocate_seconds: float = 0.0
    decrypt_seconds: float = 0.0
    digest_seconds: float = 0.0
    plaintext_length: int = 0
    #: CPU seconds the worker processes used (user, system), from getrusage(RUSAGE_CHILDREN)
    worker_user_seconds: float = 0.0
    worker_system_seconds: float = 0.0


def _refuse(buf: bytearray | mmap.mmap | None, message: str) -> ModelTampered:
    if buf is not None and len(buf):
        buf[:] = bytes(len(buf))  # nothing partial survives
    return ModelTampered(message)


def _check_digest(
    header: ModelHeader, actual: bytes, expected_sha256: bytes | None, what: str
) -> str | None:
    if actual != header.plaintext_sha256:
        return f"{what}: plaintext SHA-256 {actual.hex()} does not match its header"
    if expected_sha256 is not None and actual != expected_sha256:
        return f"{what}: model SHA-256 {actual.hex()} is not the pinned {expected_sha256.hex()}"
    return None


def _check_limits(
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
    _check_limits(header, max_plaintext, expected_sha256, what)
    keys = authenticate_header(header, data_key, what=what)
    cipher = AESGCM(keys.chunk)
    h = header.digest
    out = bytearray(header.plaintext_length)
    view = memoryview(out)
    ct = bytearray(_ciphertext_chunk_len(header.chunk_size))
    ct_view = memoryview(ct)
    hasher = hashlib.sha256()
    pos = 0
    for i in range(header.chunk_count):
        n = header.chunk_plain_len(i)
        want = _ciphertext_chunk_len(n)
        got = _read_exact(stream, ct_view[:want])
        if got != want:
            view.release()
            raise _refuse(
                out, f"{what}: truncated: chunk {i} of {header.chunk_count} is incomplete"
            )
        try:
            _open_chunk(cipher, i, ct_view[:want], header.chunk_aad(i, h), view[pos : pos + n])
        except InvalidTag:
            view.release()
            raise _refuse(
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
        raise _refuse(out, f"{what}: data after the final chunk")
    problem = _check_digest(header, hasher.digest(), expected_sha256, what)
    view.release()
    if problem is not None:
        raise _refuse(out, problem)
    return out


def _read_exact(stream: IO[bytes], target: memoryview) -> int:
    got = 0
    while got < len(target):
        n = stream.readinto(target[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _decrypt_range(
    fd: int,
    header: ModelHeader,
    chunk_key: bytes,
    first: int,
    last: int,
    out: mmap.mmap,
    conn: Connection,
) -> None:
    """Worker: decrypt chunks [first, last) of the file open as ``fd`` into ``out``."""
    cipher = AESGCM(chunk_key)
    h = header.digest
    start = first * header.chunk_size
    end = min(last * header.chunk_size, header.plaintext_length)
    with contextlib.suppress(OSError, ValueError):
        # map the parent's (populated) pages in one call instead of one fault per page
        out.madvise(_MADV_POPULATE_WRITE, start, end - start)
    view = memoryview(out)
    ct = bytearray(_ciphertext_chunk_len(header.chunk_size))
    ct_view = memoryview(ct)
    try:
        for i in range(first, last):
            n = header.chunk_plain_len(i)
            want = _ciphertext_chunk_len(n)
            got = os.preadv(fd, [ct_view[:want]], header.chunk_offset(i))
            if got != want:
                conn.send(("short", i))
                return
            pos = i * header.chunk_size
            try:
                _open_chunk(cipher, i, ct_view[:want], header.chunk_aad(i, h), view[pos : pos + n])
            except InvalidTag:
                conn.send(("tag", i))
                return
        conn.send(("ok", last))
    finally:
        view.release()
        conn.close()


def decrypt_model_file(
    path: Path,
    data_key: bytes,
    *,
    workers: int = 2,
    expected_sha256: bytes | None = None,
    max_plaintext: int = DEFAULT_MAX_PLAINTEXT,
    stats: DecryptStats | None = None,
) -> mmap.mmap | bytearray:
    """Decrypt a CIMF file, in ``workers`` processes when > 1 (forked; Linux).

    The parent authenticates the header and checks the file length, maps a shared
    anonymous buffer (populated up front: first-touch page faults of shared memory in
    the children would otherwise dominate), splits the chunks into contiguous ranges and
    forks one worker per range; each worker ``pread``s and opens its chunks into the
    buffer.  Only after every worker reported success does the parent hash the whole
    plaintext against the header's and the pinned digest.  Returns the buffer (an
    ``mmap`` on the parallel path).  ``stats``, when given, receives the phase timings.

    Forking is safe only before the caller starts threads (or call with ``workers=1``
    from a threaded server).  On this project's 2-core VM a *first* load is faster
    serially (fresh shared pages cost more to map than the second core saves); the
    parallel path wins on steady-state throughput (see bench/results/model.md).
    """
    what = str(path)
    st = stats if stats is not None else DecryptStats()
    st.workers = max(1, workers)
    t0 = time.perf_counter()
    if workers <= 1:
        with open_input(path) as fh:
            plain = decrypt_model(
                fh,
                data_key,
                expected_sha256=expected_sha256,
                max_plaintext=max_plaintext,
                what=what,
            )
        st.decrypt_seconds = time.perf_counter() - t0
        st.plaintext_length = len(plain)
        return plain
    with open_input(path) as fh:
        header = read_header(fh, what=what)
        _check_limits(header, max_plaintext, expected_sha256, what)
        keys = authenticate_header(header, data_key, what=what)
        size = os.fstat(fh.fileno()).st_size
        if size < header.file_length:
            raise ModelTampered(
                f"{what}: truncated: {size} bytes, the header needs {header.file_length}"
            )
        if size > header.file_length:
            raise ModelTampered(f"{what}: data after the final chunk")
        st.plaintext_length = header.plaintext_length
        if header.chunk_count < 2:
            fh.seek(0)
            return decrypt_model(
                fh,
                data_key,
                expected_sha256=expected_sha256,
                max_plaintext=max_plaintext,
                what=what,
            )
        t1 = time.perf_counter()
        st.header_seconds = t1 - t0
        flags = mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
        out = mmap.mmap(-1, header.plaintext_length, flags=flags)
        t2 = time.perf_counter()
        st.allocate_seconds = t2 - t1
        n = min(workers, header.chunk_count)
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        bounds = [header.chunk_count * k // n for k in range(n + 1)]
        ctx = multiprocessing.get_context("fork")
        procs: list[tuple[Any, Connection]] = []
        for k in range(n):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=_decrypt_range,
                args=(fh.fileno(), header, keys.chunk, bounds[k], bounds[k + 1], out, send),
                daemon=True,
            )
            p.start()
            send.close()
            procs.append((p, recv))
        failures: list[str] = []
        for p, recv in procs:
            try:
                status, index = recv.recv()
            except EOFError:
                status, index = "died", -1
            p.join()
            recv.close()
            if status == "tag":
                failures.append(
                    f"{what}: chunk {index} of {header.chunk_count} failed authentication "
                    "(modified, reordered, spliced from another file, or wrong key)"
                )
            elif status == "short":
                failures.append(f"{what}: truncated: chunk {index} is incomplete")
            elif status != "ok" or p.exitcode != 0:
                failures.append(f"{what}: a decryption worker failed (exit {p.exitcode})")
    t3 = time.perf_counter()
    st.decrypt_seconds = t3 - t2
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    st.worker_user_seconds = usage1.ru_utime - usage0.ru_utime
    st.worker_system_seconds = usage1.ru_stime - usage0.ru_stime
    if failures:
        raise _refuse(out, failures[0])
    problem = _check_digest(header, hashlib.sha256(out).digest(), expected_sha256, what)
    st.digest_seconds = time.perf_counter() - t3
    if problem is not None:
        raise _refuse(out, problem)
    return out


def load_encrypted_model(
    path: Path,
    unwrap: Callable[[ModelHeader], bytes | bytearray],
    *,
    expected_sha256: bytes | None = None,
    workers: int = 1,
    max_plaintext: int = DEFAULT_MAX_PLAINTEXT,
) -> mmap.mmap | bytearray:
    """The enclave's entry point: header -> data key -> verified plaintext.

    ``unwrap(header)`` returns the 32-byte data key, typically KMS ``Decrypt`` with a
    Recipient over ``header.wrapped_key`` with ``header.kms_key_id`` and
    ``dict(header.encryption_context)``.  A ``bytearray`` key is zeroed after use.
    """
    with open_input(path) as fh:
        header = read_header(fh, what=str(path))
    _check_limits(header, max_plaintext, expected_sha256, str(path))
    key = unwrap(header)
    try:
        return decrypt_model_file(
            path,
            bytes(key),
            workers=workers,
            expected_sha256=expected_sha256,
            max_plaintext=max_plaintext,
        )
    finally:
        if isinstance(key, bytearray):
            key[:] = bytes(len(key))


def decrypt_model_to(
    src: Path,
    dst: Path,
    data_key: bytes,
    *,
    expected_sha256: bytes | None = None,
    workers: int = 1,
) -> ModelHeader:
    """Decrypt ``src`` to ``dst``; ``dst`` appears only after everything verified."""
    plain = decrypt_model_file(src, data_key, workers=workers, expected_sha256=expected_sha256)
    with open_input(src) as fh:
        header = read_header(fh, what=str(src))
    try:
        with atomic_write(dst, mode=0o600) as out:
            out.write(plain)
    finally:
        if isinstance(plain, mmap.mmap):
            plain.close()
    return header
