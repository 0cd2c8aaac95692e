"""The rootfs backend protocol: a backend turns the spec into a root filesystem tarball.

Everything after that (adding the application and wheels, normalizing into the
newc application ramdisk) is shared code in :mod:`builder.app` and
:mod:`builder.initramfs`, so any backend (native mmdebstrap, Docker) yields the
same ramdisk layout: ``rootfs/...``, ``cmd``, ``env``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.spec import LoadedSpec, LockedPackage
from enclave_audit.progress import ProgressSink


@dataclass(frozen=True)
class RootfsResult:
    """An uncompressed tar of the root filesystem (member names relative to ``/``)."""

    tarball: Path
    sha256: str
    packages: tuple[LockedPackage, ...]
    tool: str
    reused: bool


class RootfsBackend(Protocol):
    """Turns a spec into a root filesystem tarball with every package pinned."""

    name: str

    def build_rootfs(
        self,
        loaded: LoadedSpec,
        *,
        epoch: int,
        use_cache: bool,
        progress: ProgressSink,
    ) -> RootfsResult: ...

    def update_lock(self, loaded: LoadedSpec, *, epoch: int, progress: ProgressSink) -> Path:
        """Resolve the spec's packages now and (re)write its lock file."""
        ...
