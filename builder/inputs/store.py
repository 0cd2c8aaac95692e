"""The local content-addressed store: every input ever fetched, by sha256, re-verified on use."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from enclave_audit.errors import DigestMismatch
from enclave_audit.fsutil import cache_dir, sha256_file, touch_entry


class InputStore:
    """``<cache>/inputs/<aa>/<sha256>``: one file per pinned digest.

    ``ENCLAVE_AUDIT_STORE`` moves it on its own (e.g. to share fetched inputs between
    machines, or to start a build with no input at hand while reusing built artefacts).

    A file is only ever added after its bytes were hashed to its name, and is hashed
    again on every :meth:`get`; a mismatch (disk corruption, tampering) is a
    :class:`DigestMismatch`, never a silent re-download.
    """

    def __init__(self, root: Path | None = None) -> None:
        if root is None and os.environ.get("ENCLAVE_AUDIT_STORE"):
            root = Path(os.environ["ENCLAVE_AUDIT_STORE"])
        self.root = Path(root) if root is not None else cache_dir("inputs")
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def get(self, sha256: str) -> Path | None:
        """The stored file for ``sha256`` (verified now), or None."""
        path = self.path_for(sha256)
        if not path.is_file():
            return None
        got = sha256_file(path)
        if got != sha256:
            raise DigestMismatch(
                f"stored input {path} has sha256 {got} (cache tampered or corrupt; delete it)"
            )
        touch_entry(path)
        return path

    def scratch(self) -> Path:
        """A directory on the store's filesystem for downloads that :meth:`adopt` moves in."""
        path = self.root / ".incoming"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def adopt(self, tmp: Path, sha256: str) -> Path:
        """Move a file whose sha256 the caller has just verified into the store."""
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        return final

    def add_copy(self, src: Path, sha256: str) -> Path:
        """Copy ``src`` into the store after checking that its bytes hash to ``sha256``."""
        if self.has(sha256):
            stored = self.get(sha256)
            assert stored is not None
            return stored
        fd, tmp = tempfile.mkstemp(prefix=".add-", dir=self.scratch())
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            got = sha256_file(Path(tmp))
            if got != sha256:
                raise DigestMismatch(f"{src} has sha256 {got}, pinned {sha256}")
            return self.adopt(Path(tmp), sha256)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
