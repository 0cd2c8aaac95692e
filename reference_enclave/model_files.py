"""Encrypted model files on the host: encrypt, decrypt to a file, parallel decryption.

The CIMF format itself (header, keys, chunk AAD, the streaming decryptor the enclave
runs) is :mod:`enclave_runtime.model_format`; this module holds what only the
publisher's and the auditor's tools do with files: ``enclave-audit model
encrypt/decrypt/load``, the benchmark's multi-process decryption and local key files.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave_audit.errors import InvalidInput, KeyFileError, ModelTampered
from enclave_audit.fsutil import atomic_write, open_input, read_bytes
from enclave_runtime.model_format import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_PLAINTEXT,
    KEY_SIZE,
    ModelHeader,
    authenticate_header,
    build_header,
    check_digest,
    check_limits,
    ciphertext_chunk_len,
    decrypt_model,
    open_chunk,
    read_header,
    refuse,
)

_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; older kernels refuse it (EINVAL) harmlessly


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
    ct = bytearray(ciphertext_chunk_len(header.chunk_size))
    ct_view = memoryview(ct)
    try:
        for i in range(first, last):
            n = header.chunk_plain_len(i)
            want = ciphertext_chunk_len(n)
            got = os.preadv(fd, [ct_view[:want]], header.chunk_offset(i))
            if got != want:
                conn.send(("short", i))
                return
            pos = i * header.chunk_size
            try:
                open_chunk(cipher, i, ct_view[:want], header.chunk_aad(i, h), view[pos : pos + n])
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
        check_limits(header, max_plaintext, expected_sha256, what)
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
        raise refuse(out, failures[0])
    problem = check_digest(header, hashlib.sha256(out).digest(), expected_sha256, what)
    st.digest_seconds = time.perf_counter() - t3
    if problem is not None:
        raise refuse(out, problem)
    return out


def load_encrypted_model(
    path: Path,
    unwrap: Callable[[ModelHeader], bytes | bytearray],
    *,
    expected_sha256: bytes | None = None,
    workers: int = 1,
    max_plaintext: int = DEFAULT_MAX_PLAINTEXT,
) -> mmap.mmap | bytearray:
    """A model file: header -> data key (``unwrap``) -> verified plaintext.

    ``unwrap(header)`` returns the 32-byte data key, typically KMS ``Decrypt`` with a
    Recipient over ``header.wrapped_key`` with ``header.kms_key_id`` and
    ``dict(header.encryption_context)``.  A ``bytearray`` key is zeroed after use.
    """
    with open_input(path) as fh:
        header = read_header(fh, what=str(path))
    check_limits(header, max_plaintext, expected_sha256, str(path))
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
