"""``enclave-audit lock update``: re-resolve the Debian lock against today's mirrors.

The closure is resolved by mmdebstrap itself (the same variant and top-level
packages as a build), pointed at the spec's mirrors; every .deb apt used must then
appear, with the same sha256, in an index whose ``InRelease`` signature verified
against the archive keyring (``gpgv``), so nothing enters the lock that the archive
did not sign for.  The new lock records when it was resolved (the snapshot archive's
timestamp for every version in it) and is written atomically, only when something
changed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from debian.debian_support import Version

from builder.inputs.apt import PackageRecord, SuiteIndex, load_suite, require_keyring
from builder.inputs.fetch import FetchFailed
from builder.inputs.refs import apt_sources
from builder.inputs.resolver import format_timestamp
from builder.rootfs.native import lock_from_debs, run_mmdebstrap
from builder.spec import LoadedSpec, LockedPackage, format_lock
from enclave_audit.errors import PinnedInputUnavailable, TrustError
from enclave_audit.fsutil import cache_dir, write_text_atomic
from enclave_audit.progress import NullProgress, ProgressSink


@dataclass(frozen=True)
class LockChange:
    """One package whose pin moves (``old`` None: added; ``new`` None: removed)."""

    name: str
    arch: str
    old: str | None
    new: str | None
    #: the new version comes from a security suite
    security: bool = False
    suite: str = ""

    def line(self) -> str:
        mark = "  [security]" if self.security else ""
        old, new = self.old or "(new)", self.new or "(removed)"
        return f"{self.name} ({self.arch}): {old} -> {new}{mark}"


@dataclass
class LockUpdate:
    path: Path
    resolved_at: str
    epoch: int
    packages: list[LockedPackage]
    changes: list[LockChange]
    written: bool
    notes: list[str] = field(default_factory=list)


def _signed_indices(
    loaded: LoadedSpec, mirror_map: dict[str, str], keyring: Path, progress: ProgressSink
) -> list[SuiteIndex]:
    out: list[SuiteIndex] = []
    for src in apt_sources(loaded.spec.debian.mirrors):
        base = mirror_map.get(src.uri, src.uri)
        progress.start(f"lock: reading signed index {base} {src.suite}", None)
        try:
            out.append(load_suite(src, base=base, keyring=keyring))
        except FetchFailed as exc:
            raise PinnedInputUnavailable(
                f"cannot read the index of {base} {src.suite} ({exc.reason}); lock update needs"
                " every mirror of the spec"
            ) from None
    return out


def _record_for(pkg: LockedPackage, indices: list[SuiteIndex]) -> PackageRecord:
    """The signed index record of exactly this file (security suites first)."""
    found: list[PackageRecord] = []
    for index in indices:
        rec = index.lookup(pkg.name, pkg.version, pkg.arch)
        if rec is not None and rec.sha256 == pkg.sha256:
            found.append(rec)
    if not found:
        raise TrustError(
            f"apt installed {pkg.name} {pkg.version} ({pkg.arch}, sha256 {pkg.sha256}),"
            " which no signed index of the spec's mirrors lists with those bytes"
        )
    found.sort(key=lambda r: not r.suite.endswith("-security"))
    return found[0]


def diff_locks(
    old: tuple[LockedPackage, ...], new: list[LockedPackage], suites: dict[str, str]
) -> list[LockChange]:
    before = {(p.name, p.arch): p for p in old}
    after = {(p.name, p.arch): p for p in new}
    changes: list[LockChange] = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a is not None and b is not None and (a.version, a.sha256) == (b.version, b.sha256):
            continue
        suite = suites.get(b.name, "") if b is not None else ""
        changes.append(
            LockChange(
                name=key[0],
                arch=key[1],
                old=a.version if a else None,
                new=b.version if b else None,
                security=suite.endswith("-security"),
                suite=suite,
            )
        )
    return changes


def _kernel_note(loaded: LoadedSpec, indices: list[SuiteIndex]) -> str | None:
    kernel = loaded.spec.kernel
    newest: PackageRecord | None = None
    served = False
    for index in indices:
        if index.lookup(kernel.package, kernel.version) is not None:
            served = True
        rec = index.newest(kernel.package)
        if rec is not None and (newest is None or Version(rec.version) > Version(newest.version)):
            newest = rec
    if newest is not None and Version(newest.version) > Version(kernel.version):
        where = "still served" if served else "NO LONGER served by the mirrors"
        return (
            f"kernel {kernel.package}: pinned {kernel.version} ({where});"
            f" {newest.suite} now has {newest.version} (sha256 {newest.sha256}):"
            " edit [kernel] in the spec to move to it (PCR0 and PCR1 will change)"
        )
    if not served:
        return f"kernel {kernel.package} {kernel.version}: no longer served by the mirrors"
    return None


def update_lock(
    loaded: LoadedSpec,
    *,
    mirror_map: dict[str, str] | None = None,
    keyring: Path | None = None,
    now: datetime | None = None,
    write: bool = True,
    progress: ProgressSink | None = None,
) -> LockUpdate:
    """Resolve the spec's packages now; rewrite the lock (atomically) if anything moved."""
    progress = progress or NullProgress()
    mirror_map = mirror_map or {}
    when = (now or datetime.now(UTC)).replace(microsecond=0)
    resolved_at = format_timestamp(when)
    epoch = int(when.timestamp())
    indices = _signed_indices(loaded, mirror_map, require_keyring(keyring), progress)
    sources = [
        f"deb [trusted=yes] {mirror_map.get(s.uri, s.uri)} {s.suite} {' '.join(s.components)}"
        for s in apt_sources(loaded.spec.debian.mirrors)
    ]
    progress.start("lock: resolving the package closure with mmdebstrap", None)
    with tempfile.TemporaryDirectory(prefix="lock-", dir=cache_dir("rootfs")) as tmp:
        debs = Path(tmp) / "debs"
        debs.mkdir()
        run_mmdebstrap(
            loaded,
            includes=[f"{p.name}={p.version}" for p in loaded.spec.debian.packages],
            epoch=epoch,
            tar=Path(tmp) / "resolve.tar",
            debs=debs,
            sources=sources,
        )
        packages = lock_from_debs(debs)
    suites = {p.name: _record_for(p, indices).suite for p in packages}
    changes = diff_locks(loaded.lock, packages, suites)
    path = loaded.base / loaded.spec.debian.lock
    notes = [n for n in (_kernel_note(loaded, indices),) if n]
    written = False
    if changes and write:
        write_text_atomic(path, format_lock(packages, epoch, resolved_at))
        written = True
    progress.done()
    return LockUpdate(
        path=path,
        resolved_at=resolved_at,
        epoch=epoch,
        packages=packages,
        changes=changes,
        written=written,
        notes=notes,
    )
