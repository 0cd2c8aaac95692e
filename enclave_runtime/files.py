"""Reading files: OS errors become one-line project errors, sizes are bounded.

The auditor's :mod:`enclave_audit.fsutil` re-exports these (one copy, the one the
image runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from enclave_runtime.errors import InputNotFound, InvalidInput


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
    """The whole file; more than ``limit`` bytes is :class:`InvalidInput`."""
    with open_input(path) as fh:
        data = fh.read(-1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise InvalidInput(f"{path}: larger than the {limit}-byte limit for this kind of file")
    return data
