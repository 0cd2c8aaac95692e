"""Files: atomic writes, whole-directory atomic outputs, streaming hashes, safe reads."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from enclave_audit.errors import InputNotFound, InvalidInput, OutputError
from enclave_runtime.files import open_input as open_input
from enclave_runtime.files import read_bytes as read_bytes

CHUNK = 1 << 20


#: errors of a write to a stream (full device, closed pipe, I/O error, size limits)
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EFBIG, errno.EDQUOT})
#: names that stand for the process's own streams: written in place, whatever they are
_STREAM_NAMES = re.compile(r"^/(dev/(stdout|stderr|tty|fd/[0-9]+)|proc/self/fd/[0-9]+)$")


def output_kind(path: Path) -> str:
    """How :func:`atomic_write` treats ``path``: ``"file"`` (temp file, then rename over
    it or create it) or ``"stream"`` (a character device such as ``/dev/null`` or a
    terminal, or a name for the process's own stdout/stderr: written in place).

    Anything else that exists there (a FIFO, a socket, a block device, a directory) is
    refused with :class:`OutputError`: a rename would replace it, and a write into it
    would block or reach something that is not a file.
    """
    path = Path(path)
    if _STREAM_NAMES.match(os.path.normpath(str(path.absolute()))):
        return "stream"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file"
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISCHR(st.st_mode):
        return "stream"
    kind = (
        "a directory"
        if stat.S_ISDIR(st.st_mode)
        else "a FIFO"
        if stat.S_ISFIFO(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "a block device"
        if stat.S_ISBLK(st.st_mode)
        else "not a regular file"
    )
    raise OutputError(f"refusing to write {path}: it is {kind}, not a regular file")


@contextlib.contextmanager
def atomic_write(path: Path, *, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Write ``path`` through a temp file in the same directory, renamed on success.

    On any exception the temp file is removed and ``path`` is untouched.  A character
    device (``/dev/null``, a terminal) or a name of the process's own output stream
    (``/dev/stdout``) is written in place instead, deliberately: it is never renamed
    over.  Other non-regular targets are refused (:func:`output_kind`).
    """
    path = Path(path)
    if output_kind(path) == "stream":
        try:
            stream = open(path, "wb")
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            with stream:
                yield stream
                stream.flush()
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS:
                raise
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        return
    import tempfile  # here, not at import: the verify-only verbs write nothing

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        output_kind(path)  # still nothing but a regular file (or nothing) there
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: Linux's SYNC_FILE_RANGE_WRITE: start writeback of dirty pages, do not wait
_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` where the platform has it (Linux), else None."""
    import ctypes

    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


class EarlyWriteback:
    """A file wrapper that starts the disk writeback of each ``every`` bytes once written.

    A large output that is fsynced at the end (as :func:`atomic_write` does) then
    finds most of its pages already on their way to disk, so the flush overlaps
    the work that produced the bytes instead of following it (the technique of
    git's batched fsync).  Only a hint: where ``sync_file_range`` is missing, or
    fails, writing goes on unchanged and the final fsync does all the work.
    """

    def __init__(self, fh: IO[bytes], *, every: int = 16 << 20) -> None:
        self._fh = fh
        self._every = every
        self._written = 0
        self._started = 0
        self._hint = _sync_file_range()

    def write(self, data: bytes | memoryview) -> int:
        n = self._fh.write(data)
        self._written += len(data)
        if self._hint is not None and self._written - self._started >= self._every:
            self._fh.flush()
            if self._hint(
                self._fh.fileno(),
                self._started,
                self._written - self._started,
                _SYNC_FILE_RANGE_WRITE,
            ):
                self._hint = None  # not supported here (e.g. some filesystems): stop trying
            self._started = self._written
        return n


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    with atomic_write(path, mode=mode) as fh:
        fh.write(data)


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """UTF-8; a lone surrogate (an undecodable name) is written visibly, never an error."""
    from enclave_runtime.strictjson import without_surrogates

    write_bytes_atomic(path, without_surrogates(text).encode("utf-8"), mode=mode)


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o644) -> None:
    import json

    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", mode=mode)


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a directory's contents in a sibling temp dir; it appears whole or not at all.

    If ``final`` exists it is replaced only after the new contents are complete.
    """
    import shutil
    import tempfile

    final = Path(final)
    if final.exists() and not final.is_dir():  # a device, FIFO or file is never moved away
        raise OutputError(
            f"refusing to replace {final} with a directory: it exists and is not a directory"
        )
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        )
    except OSError as exc:
        raise OutputError(f"cannot create {final}: {exc.strerror or exc}") from None
    try:
        yield staging
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_regular_file(path: Path, *, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, read without blocking.

    For input that someone else controls: a FIFO, device, socket or directory is an
    :class:`InvalidInput` before any byte is read (opened non-blocking, so a FIFO
    without a writer cannot hang the caller), a missing file an :class:`InputNotFound`,
    and a file longer than ``limit`` an :class:`InvalidInput` after ``limit + 1`` bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputNotFound(f"{path}: no such file") from None
    except OSError as exc:
        raise InputNotFound(f"{path}: cannot read: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = (
            "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a directory" if stat.S_ISDIR(mode)
            else "not a regular file"
        )  # fmt: skip
        raise InvalidInput(f"{path}: is {kind}, expected a regular file")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InputNotFound(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InvalidInput(f"{path}: larger than the {limit}-byte limit for this kind of file")
    return data


def read_json(path: Path, *, limit: int = 64 << 20) -> Any:
    """A JSON file, parsed strictly (:mod:`enclave_runtime.strictjson`): duplicate keys,
    NaN, huge numbers, deep nesting and lone surrogates are :class:`InvalidInput`."""
    from enclave_runtime import strictjson

    return strictjson.loads(read_bytes(path, limit=limit), what=str(path), error=InvalidInput)


def hash_file(
    path: Path,
    algorithms: tuple[str, ...] = ("sha256",),
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, bytes]:
    """Stream a file once through several hashers; returns algorithm -> digest bytes.

    With more than one algorithm the hashers run in parallel threads (hashlib
    releases the GIL on large buffers), so sha256 + sha384 cost about one pass.
    """
    hashers = {name: hashlib.new(name) for name in algorithms}
    if len(hashers) == 1:
        (only,) = hashers.values()
        with open_input(path) as fh:
            while chunk := fh.read(CHUNK):
                only.update(chunk)
                if progress is not None:
                    progress(len(chunk))
        return {name: h.digest() for name, h in hashers.items()}
    from concurrent.futures import ThreadPoolExecutor, wait

    with open_input(path) as fh, ThreadPoolExecutor(max_workers=len(hashers)) as pool:
        while chunk := fh.read(4 * CHUNK):
            wait([pool.submit(h.update, chunk) for h in hashers.values()])
            if progress is not None:
                progress(len(chunk))
    return {name: h.digest() for name, h in hashers.items()}


def sha256_file(path: Path) -> str:
    return hash_file(path, ("sha256",))["sha256"].hex()


def prune_cache(store: Path, *, keep: int, marker: str | None = None) -> None:
    """Drop all but the ``keep`` most recently used entries (directories) of a cache.

    "Used" is the entry's mtime, which :func:`touch_entry` sets on every hit.
    Hidden names (entries being written) are never candidates, and with
    ``marker`` only directories holding that file are (not scratch directories).
    """
    import shutil

    entries = [
        p
        for p in store.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (marker is None or (p / marker).exists())
    ]
    entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def touch_entry(entry: Path) -> None:
    """Mark a cache entry as just used (for :func:`prune_cache`); best effort."""
    with contextlib.suppress(OSError):
        os.utime(entry)


def cache_dir(*parts: str) -> Path:
    """The project's cache (``$ENCLAVE_AUDIT_CACHE`` or ``~/.cache/enclave-audit``), created."""
    base = Path(os.environ.get("ENCLAVE_AUDIT_CACHE") or Path.home() / ".cache" / "enclave-audit")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
