"""Files: atomic writes, whole-directory atomic outputs, streaming hashes, safe reads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from enclave_audit.errors import InputNotFound, InvalidInput, OutputError

CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_write(path: Path, *, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Write ``path`` through a temp file in the same directory, renamed on success.

    On any exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
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
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    with atomic_write(path, mode=mode) as fh:
        fh.write(data)


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o644) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", mode=mode)


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a directory's contents in a sibling temp dir; it appears whole or not at all.

    If ``final`` exists it is replaced only after the new contents are complete.
    """
    final = Path(final)
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


def open_input(path: Path) -> IO[bytes]:
    """Open a file for reading, mapping OS errors to :class:`InputNotFound`."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputNotFound(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputNotFound(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise InputNotFound(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_bytes(path: Path, *, limit: int | None = None) -> bytes:
    with open_input(path) as fh:
        data = fh.read(-1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise InvalidInput(f"{path}: larger than the {limit}-byte limit for this kind of file")
    return data


def read_json(path: Path, *, limit: int = 64 << 20) -> Any:
    data = read_bytes(path, limit=limit)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"{path}: not valid JSON: {exc}") from None


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


def cache_dir(*parts: str) -> Path:
    """The project's cache (``$ENCLAVE_AUDIT_CACHE`` or ``~/.cache/enclave-audit``), created."""
    base = Path(os.environ.get("ENCLAVE_AUDIT_CACHE") or Path.home() / ".cache" / "enclave-audit")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
