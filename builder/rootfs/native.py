"""Native backend: Debian bookworm with mmdebstrap, every .deb checked against the lock.

``mmdebstrap --variant=essential`` with ``SOURCE_DATE_EPOCH`` gives a
byte-identical tarball for identical package sets.  Pinning: every package of
the lock is installed as ``name=version``; the .debs mmdebstrap used are copied
out of the chroot (``--skip=essential/unlink`` keeps them) and each one's sha256
must equal the lock's.  Python bytecode caches are removed (they embed source
mtimes and marshal order) and the image runs with ``PYTHONDONTWRITEBYTECODE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from builder.debian import apt_record
from builder.rootfs.base import ROOTFS_CACHE_KEEP, RootfsResult
from builder.spec import LoadedSpec, LockedPackage, format_lock
from builder.toolchain import toolchain_versions
from enclave_audit.errors import (
    DigestMismatch,
    PinnedInputUnavailable,
    SpecInvalid,
)
from enclave_audit.fsutil import (
    atomic_directory,
    cache_dir,
    prune_cache,
    sha256_file,
    write_text_atomic,
)
from enclave_audit.progress import ProgressSink
from enclave_audit.tools import require, run

RECIPE_VERSION = 1
_HOOKS = (
    # no bytecode caches: they embed mtimes and are written in a racy order
    'find "$1" -xdev -name __pycache__ -type d -prune -exec rm -rf {} +',
    # files that record when/where the image was made
    'rm -f "$1/etc/hostname" "$1/etc/resolv.conf" "$1/var/lib/dbus/machine-id"',
    'printf "" > "$1/etc/machine-id"',
)


def _deb_fields(deb: Path) -> tuple[str, str, str]:
    done = run(
        ["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"], what="dpkg-deb -f"
    )
    fields: dict[str, str] = {}
    for line in done.stdout.decode().splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields["Package"], fields["Version"], fields["Architecture"]


class NativeBackend:
    """mmdebstrap on this machine's apt mirror."""

    name = "native"

    def _includes(self, loaded: LoadedSpec, *, locked: bool) -> list[str]:
        if locked:
            return [f"{p.name}={p.version}" for p in loaded.lock]
        return [f"{p.name}={p.version}" for p in loaded.spec.debian.packages]

    def _cache_key(self, loaded: LoadedSpec, epoch: int) -> str:
        deb = loaded.spec.debian
        doc = {
            "recipe": RECIPE_VERSION,
            "suite": deb.suite,
            "variant": deb.variant,
            "mirrors": list(deb.mirrors),
            "lock": [p.model_dump() for p in loaded.lock],
            "hooks": list(_HOOKS),
            "remove": list(deb.remove_paths),
            "path_exclude": list(deb.path_exclude),
            "path_include": list(deb.path_include),
            "epoch": epoch,
            "mmdebstrap": toolchain_versions().get("mmdebstrap", ""),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def _check_available(self, loaded: LoadedSpec) -> None:
        for p in loaded.lock:
            rec = apt_record(p.name, p.version)
            if rec is None:
                raise PinnedInputUnavailable(
                    f"Debian package {p.name} {p.version} (pinned in {loaded.spec.debian.lock})"
                    " is not served by the configured apt sources"
                )
            if rec.sha256 != p.sha256:
                raise DigestMismatch(
                    f"Debian package {p.name} {p.version}: the mirror serves sha256 {rec.sha256},"
                    f" the lock pins {p.sha256}"
                )

    def _mmdebstrap(
        self, loaded: LoadedSpec, includes: list[str], epoch: int, tar: Path, debs: Path
    ) -> None:
        require("mmdebstrap")
        deb = loaded.spec.debian
        argv = [
            "mmdebstrap",
            "--quiet",
            f"--variant={deb.variant}",
            # unprivileged builds use user namespaces; both modes give the same tarball
            "--mode=root" if os.geteuid() == 0 else "--mode=unshare",
            "--format=tar",
            "--skip=essential/unlink",
            f"--include={','.join(includes)}",
            "--aptopt=APT::Install-Recommends false",
            *[f"--dpkgopt=path-exclude={p}" for p in deb.path_exclude],
            *[f"--dpkgopt=path-include={p}" for p in deb.path_include],
            f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
            *[f"--customize-hook={h}" for h in _HOOKS],
            *[f'--customize-hook=rm -rf "$1/{p.lstrip("/")}"' for p in deb.remove_paths],
            deb.suite,
            str(tar),
            *deb.mirrors,
        ]
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SOURCE_DATE_EPOCH": str(epoch),
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "HOME": os.environ.get("HOME", "/root"),
            "TMPDIR": str(tar.parent),
        }
        # the caller's umask must not leak into directories mmdebstrap creates itself
        run(["sh", "-c", 'umask 022; exec "$@"', "sh", *argv], env=env, what="mmdebstrap")

    def _lock_from_debs(self, debs: Path) -> list[LockedPackage]:
        out: list[LockedPackage] = []
        for deb in sorted(debs.glob("*.deb")):
            name, version, arch = _deb_fields(deb)
            out.append(
                LockedPackage(name=name, version=version, arch=arch, sha256=sha256_file(deb))
            )
        return out

    def build_rootfs(
        self,
        loaded: LoadedSpec,
        *,
        epoch: int,
        use_cache: bool,
        progress: ProgressSink,
    ) -> RootfsResult:
        if not loaded.lock:
            raise SpecInvalid(
                f"{loaded.base / loaded.spec.debian.lock}: missing or empty Debian lock"
                " (create it with: enclave-audit build --update-lock)"
            )
        key = self._cache_key(loaded, epoch)
        final = cache_dir("rootfs") / key
        tool = toolchain_versions().get("mmdebstrap", "mmdebstrap")
        if use_cache and (final / "rootfs.json").exists():
            return self._verified(final, tool, loaded)
        progress.start("rootfs: checking pins", None)
        self._check_available(loaded)
        progress.start("rootfs: mmdebstrap (download + install)", None)
        started = time.perf_counter()
        with (
            atomic_directory(final) as out,
            tempfile.TemporaryDirectory(prefix="debs-", dir=out.parent) as tmp,
        ):
            debs = Path(tmp)
            self._mmdebstrap(
                loaded, self._includes(loaded, locked=True), epoch, out / "rootfs.tar", debs
            )
            used = {(p.name, p.arch): p for p in self._lock_from_debs(debs)}
            pinned = {(p.name, p.arch): p for p in loaded.lock}
            for k, got in sorted(used.items()):
                want = pinned.get(k)
                if want is None:
                    raise PinnedInputUnavailable(
                        f"mmdebstrap installed {got.name} {got.version}, not pinned by the lock"
                        " (the mirror changed; re-run with --update-lock and review)"
                    )
                if (want.version, want.sha256) != (got.version, got.sha256):
                    raise DigestMismatch(
                        f"Debian package {got.name}: installed {got.version} sha256 {got.sha256},"
                        f" lock pins {want.version} sha256 {want.sha256}"
                    )
            missing = sorted(set(pinned) - set(used))
            if missing:
                raise PinnedInputUnavailable(
                    f"pinned packages not installed: {', '.join(n for n, _ in missing[:5])}"
                )
            meta = {
                "sha256": sha256_file(out / "rootfs.tar"),
                "epoch": epoch,
                "key": key,
                "build_seconds": round(time.perf_counter() - started, 1),
            }
            (out / "rootfs.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        progress.done()
        prune_cache(final.parent, keep=ROOTFS_CACHE_KEEP, marker="rootfs.json")
        result = self._verified(final, tool, loaded)
        result.reused = False
        return result

    def _verified(self, final: Path, tool: str, loaded: LoadedSpec) -> RootfsResult:
        """The cache entry, its tarball verified on first use (see :class:`RootfsResult`)."""
        try:
            recorded = str(json.loads((final / "rootfs.json").read_text())["sha256"])
        except (OSError, ValueError, KeyError) as exc:
            raise DigestMismatch(
                f"cached rootfs {final}: unreadable record ({exc}); delete it"
            ) from None
        return RootfsResult.from_cache(final, recorded, loaded.lock, tool, "cached rootfs")

    def update_lock(self, loaded: LoadedSpec, *, epoch: int, progress: ProgressSink) -> Path:
        progress.start("rootfs: resolving packages for the lock", None)
        with tempfile.TemporaryDirectory(prefix="lock-", dir=cache_dir("rootfs")) as tmp:
            debs = Path(tmp) / "debs"
            debs.mkdir()
            self._mmdebstrap(
                loaded, self._includes(loaded, locked=False), epoch, Path(tmp) / "r.tar", debs
            )
            packages = self._lock_from_debs(debs)
        path = loaded.base / loaded.spec.debian.lock
        write_text_atomic(path, format_lock(packages, epoch))
        progress.done()
        shutil.rmtree(Path(tmp), ignore_errors=True)
        return path
