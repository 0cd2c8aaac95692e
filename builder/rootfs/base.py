"""The rootfs backend protocol: a backend turns the spec into a root filesystem tarball.

Everything after that (adding the application and wheels, normalizing into the
newc application ramdisk) is shared code in :mod:`builder.app` and
:mod:`builder.initramfs`, so any backend (native mmdebstrap, Docker) yields the
same ramdisk layout: ``rootfs/...``, ``cmd``, ``env``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from builder.inputs.resolver import Resolver
from builder.spec import LoadedSpec, LockedPackage
from enclave_audit.errors import DigestMismatch
from enclave_audit.fsutil import sha256_file, touch_entry
from enclave_audit.progress import ProgressSink

#: rootfs cache entries kept per store (about 200 MB each), least recently used dropped
ROOTFS_CACHE_KEEP = 6


@dataclass
class RootfsResult:
    """An uncompressed tar of the root filesystem (member names relative to ``/``).

    A tarball from the cache is re-verified against ``sha256`` (recorded when it
    was built) the first time :attr:`tarball` is used; a build whose application
    ramdisk is itself cached (and verified) never reads the tarball, so it never
    pays for that pass.
    """

    path: Path
    sha256: str
    packages: tuple[LockedPackage, ...]
    tool: str
    reused: bool
    #: what the tarball is called in errors; empty once its bytes are verified
    unverified: str = field(default="", repr=False)

    @classmethod
    def from_cache(
        cls, entry: Path, sha256: str, packages: tuple[LockedPackage, ...], tool: str, what: str
    ) -> RootfsResult:
        """A cache entry's ``rootfs.tar``, to be verified against ``sha256`` on first use."""
        touch_entry(entry)
        return cls(entry / "rootfs.tar", sha256, packages, tool, reused=True, unverified=what)

    @property
    def tarball(self) -> Path:
        """The tarball, its bytes checked against ``sha256`` before first use."""
        if self.unverified:
            got = sha256_file(self.path)
            if got != self.sha256:
                raise DigestMismatch(
                    f"{self.unverified} {self.path} has sha256 {got}, recorded {self.sha256}"
                    " when it was built (cache tampered or corrupt; delete it)"
                )
            self.unverified = ""
        return self.path


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
        resolver: Resolver,
    ) -> RootfsResult:
        """The root filesystem of exactly the lock's packages (fetched through ``resolver``)."""
        ...
