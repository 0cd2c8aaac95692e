"""Native backend: Debian with mmdebstrap, installing exactly the lock from a local repository.

Every pinned .deb is resolved (store, input set, mirrors, snapshot archive), checked
against the lock's sha256 and linked into a local apt repository that holds nothing
else (:mod:`builder.inputs.localrepo`); mmdebstrap installs from that repository
alone, so a mirror that has moved on cannot change what is installed, and the build
needs no network.  The image's ``/etc/apt/sources.list`` is then written with the
spec's own mirror lines, exactly as mmdebstrap writes them, so where the .debs came
from never changes a byte of the image.  ``mmdebstrap --variant=essential`` with
``SOURCE_DATE_EPOCH`` gives a byte-identical tarball for identical package sets;
the .debs apt actually used are copied out (``--skip=essential/unlink``) and must be
exactly the lock.  Python bytecode caches are removed (they embed source mtimes and
marshal order) and the image runs with ``PYTHONDONTWRITEBYTECODE``.

mmdebstrap (its hooks and the packages' maintainer scripts) runs in the build
sandbox (:mod:`builder.sandbox`): as root, without a user namespace but with only the
capabilities installing into a chroot needs (no mount, no device node), the local
repository and uploaded files read-only, the output directories read-write, nothing
else of the host, and no network unless the sources are remote (resolving a lock).
The spec's ``remove_paths`` are removed by a hook program that reads them from its
environment: no spec string ever reaches a shell.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import tempfile
import time
from pathlib import Path

from builder.inputs.localrepo import write_local_repo
from builder.inputs.refs import lock_input
from builder.inputs.resolver import Resolver
from builder.rootfs.base import ROOTFS_CACHE_KEEP, RootfsResult
from builder.sandbox import INSTALL_CAPS, Sandbox, run_sandboxed
from builder.spec import LoadedSpec, LockedPackage
from builder.toolchain import toolchain_versions
from enclave_audit.errors import (
    DigestMismatch,
    EnvironmentProblem,
    PinnedInputUnavailable,
    SpecInvalid,
)
from enclave_audit.fsutil import (
    atomic_directory,
    cache_dir,
    prune_cache,
    sha256_file,
)
from enclave_audit.progress import ProgressSink
from enclave_audit.tools import require, run

#: 2: installs from a local repository of exactly the lock, sources.list written after
RECIPE_VERSION = 2
_HOOKS = (
    # no bytecode caches: they embed mtimes and are written in a racy order
    'find "$1" -xdev -name __pycache__ -type d -prune -exec rm -rf {} +',
    # files that record when/where the image was made
    'rm -f "$1/etc/hostname" "$1/etc/resolv.conf" "$1/var/lib/dbus/machine-id"',
    'printf "" > "$1/etc/machine-id"',
)


#: the hook that tidies up after ``[debian] purge`` (its bytes are in the cache key)
PRUNE_SCRIPT = Path(__file__).with_name("prune.py")


def purge_hooks(packages: tuple[str, ...], prune_hook: Path) -> tuple[str, ...]:
    """Customize hooks removing ``packages`` with the image's own dpkg, then tidying up.

    The purged packages' maintainer scripts and trigger declarations are deleted first:
    the scripts would need the very shell and perl being removed (nothing of the image
    runs on the build host), and without the declarations their removal activates no
    trigger either (libc-bin's ldconfig trigger is a shell script).  ``--force-depends``:
    the runtime needs none of what depends on them (libpam0g on debconf, ...);
    ``--force-bad-path``: coreutils, tar and diff, which dpkg wants on PATH, are among
    what goes, and dpkg may remove itself and the libraries it runs with, already loaded.
    The image's own ``ldconfig`` (static) then rewrites the library cache, and
    ``prune_hook`` (a copy of :data:`PRUNE_SCRIPT` the sandbox can see, run by the host's
    ``/usr/bin/python3``) tidies up.
    """
    if not packages:
        return ()
    quote = shlex.quote
    control = "preinst postinst prerm postrm config templates triggers"
    names = " ".join(quote(p) for p in packages)
    return (
        f'for p in {names}; do for s in {control}; do rm -f "$1/var/lib/dpkg/info/$p.$s"'
        f' "$1/var/lib/dpkg/info/$p:"*".$s"; done; done',
        f'chroot "$1" dpkg --purge --force-remove-essential --force-depends --force-bad-path'
        f" {names}",
        'chroot "$1" /sbin/ldconfig',
        f'{quote(str(prune_hook))} "$1"',
    )


#: removes the spec's remove_paths (one per line in ENCLAVE_AUDIT_REMOVE_PATHS) from the
#: chroot given as argv[1]: no shell, no symlink followed (a parent that is a symlink is
#: an error, the target itself is removed as the link it is)
_REMOVE_HOOK = r"""#!/usr/bin/python3
import os, shutil, stat, sys

root = sys.argv[1]
for path in os.environ.get("ENCLAVE_AUDIT_REMOVE_PATHS", "").split("\n"):
    if not path:
        continue
    parts = [p for p in path.split("/") if p]
    if not path.startswith("/") or not parts or any(p in (".", "..") for p in parts):
        sys.exit(f"remove_paths: {path!r} is not a plain absolute path")
    here = root
    for part in parts[:-1]:
        here = os.path.join(here, part)
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            break
        if stat.S_ISLNK(mode):
            sys.exit(f"remove_paths: {path} passes through a symlink in the image")
    else:
        target = os.path.join(root, *parts)
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            shutil.rmtree(target)
        else:
            os.unlink(target)
"""


def _local_dirs(sources: list[str]) -> list[Path]:
    """The directories of ``copy://`` and ``file://`` sources (shown read-only to mmdebstrap)."""
    out = []
    for line in sources:
        for word in line.split():
            for scheme in ("copy://", "file://"):
                if word.startswith(scheme):
                    out.append(Path(word[len(scheme) :]))
    return out


def sources_list_text(mirrors: tuple[str, ...] | list[str]) -> str:
    """``/etc/apt/sources.list`` as mmdebstrap writes it for one-line mirror arguments:
    each line, separated by an empty line."""
    return "\n".join(f"{line}\n" for line in mirrors)


def _deb_fields(deb: Path) -> tuple[str, str, str]:
    done = run(
        ["dpkg-deb", "-f", "--", str(deb), "Package", "Version", "Architecture"],
        what="dpkg-deb -f",
    )
    fields: dict[str, str] = {}
    for line in done.stdout.decode().splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields["Package"], fields["Version"], fields["Architecture"]


def lock_from_debs(debs: Path) -> list[LockedPackage]:
    """The lock entries of the .debs in a directory (what apt actually used)."""
    out: list[LockedPackage] = []
    for deb in sorted(debs.glob("*.deb")):
        name, version, arch = _deb_fields(deb)
        out.append(LockedPackage(name=name, version=version, arch=arch, sha256=sha256_file(deb)))
    return out


def run_mmdebstrap(
    loaded: LoadedSpec,
    *,
    includes: list[str],
    epoch: int,
    tar: Path,
    debs: Path,
    sources: list[str],
    extra_hooks: tuple[str, ...] = (),
    uploads: tuple[Path, ...] = (),
) -> None:
    """mmdebstrap with the spec's options, installing from ``sources``, in the sandbox.

    ``uploads`` are host files the hooks copy into the image (shown read-only).
    """
    require("mmdebstrap")
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "installing the root filesystem needs root: mmdebstrap runs as root inside the"
            " build sandbox (no mount, no device node, no network); run the build as root"
        )
    deb = loaded.spec.debian
    hook = tar.parent / ".remove-paths-hook"
    hook.write_text(_REMOVE_HOOK)
    hook.chmod(0o755)
    prune = tar.parent / ".prune-hook"
    prune.write_text("#!/usr/bin/python3 -I\n" + PRUNE_SCRIPT.read_text())
    prune.chmod(0o755)
    argv = [
        "mmdebstrap",
        "--quiet",
        f"--variant={deb.variant}",
        "--mode=root",
        # the sandbox grants no mount: /proc, /sys and /dev stay empty in the chroot
        # (the tarball's /dev entries are written by mmdebstrap itself either way)
        "--skip=chroot/mount",
        "--format=tar",
        "--skip=essential/unlink",
        f"--include={','.join(includes)}",
        "--aptopt=APT::Install-Recommends false",
        *[f"--dpkgopt=path-exclude={p}" for p in deb.path_exclude],
        *[f"--dpkgopt=path-include={p}" for p in deb.path_include],
        f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
        *[f"--customize-hook={h}" for h in _HOOKS],
        *[f"--customize-hook={h}" for h in purge_hooks(deb.purge, prune)],
        # after the purge: the purge hooks still run the image's ldconfig
        f"--customize-hook={hook}",
        *[f"--customize-hook={h}" for h in extra_hooks],
        "--",
        deb.suite,
        str(tar),
        *sources,
    ]
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SOURCE_DATE_EPOCH": str(epoch),
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "HOME": str(tar.parent),
        "TMPDIR": str(tar.parent),
        # read by the remove-paths hook (each one a validated plain absolute path)
        "ENCLAVE_AUDIT_REMOVE_PATHS": "\n".join(deb.remove_paths),
    }
    remote = any("://" in line and "copy://" not in line and "file://" not in line
                 for line in sources)  # fmt: skip
    sandbox = Sandbox(
        writable=(tar.parent, debs),
        readable=(*_local_dirs(sources), *uploads),
        proc=True,
        devices=True,
        caps=INSTALL_CAPS,
        network=remote,
    )
    # the caller's umask must not leak into directories mmdebstrap creates itself
    try:
        run_sandboxed(
            ["/bin/sh", "-c", 'umask 022; exec "$@"', "sh", *argv],
            sandbox=sandbox,
            cwd=tar.parent,
            env=env,
            what="mmdebstrap",
        )
    finally:
        hook.unlink(missing_ok=True)
        prune.unlink(missing_ok=True)


def check_installed(used: list[LockedPackage], lock: tuple[LockedPackage, ...]) -> None:
    """The .debs apt used are exactly the lock: same names, versions and bytes."""
    got = {(p.name, p.arch): p for p in used}
    pinned = {(p.name, p.arch): p for p in lock}
    for k, pkg in sorted(got.items()):
        want = pinned.get(k)
        if want is None:
            raise PinnedInputUnavailable(
                f"mmdebstrap installed {pkg.name} {pkg.version}, which the lock does not pin"
            )
        if (want.version, want.sha256) != (pkg.version, pkg.sha256):
            raise DigestMismatch(
                f"Debian package {pkg.name}: installed {pkg.version} sha256 {pkg.sha256},"
                f" lock pins {want.version} sha256 {want.sha256}"
            )
    missing = sorted(set(pinned) - set(got))
    if missing:
        raise PinnedInputUnavailable(
            f"pinned packages not installed: {', '.join(n for n, _ in missing[:5])}"
            " (the lock holds packages the spec does not need; run enclave-audit lock update)"
        )


class NativeBackend:
    """mmdebstrap from a local repository of exactly the locked packages."""

    name = "native"

    def _cache_key(self, loaded: LoadedSpec, epoch: int) -> str:
        deb = loaded.spec.debian
        doc = {
            "recipe": RECIPE_VERSION,
            "suite": deb.suite,
            "variant": deb.variant,
            "mirrors": list(deb.mirrors),
            "lock": [p.model_dump() for p in loaded.lock],
            "hooks": [*_HOOKS, *([_REMOVE_HOOK] if deb.remove_paths else [])],
            "remove": list(deb.remove_paths),
            "purge": list(deb.purge),
            "prune": hashlib.sha256(PRUNE_SCRIPT.read_bytes()).hexdigest() if deb.purge else "",
            "path_exclude": list(deb.path_exclude),
            "path_include": list(deb.path_include),
            "epoch": epoch,
            "mmdebstrap": toolchain_versions().get("mmdebstrap", ""),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def build_rootfs(
        self,
        loaded: LoadedSpec,
        *,
        epoch: int,
        use_cache: bool,
        progress: ProgressSink,
        resolver: Resolver,
    ) -> RootfsResult:
        if not loaded.lock:
            raise SpecInvalid(
                f"{loaded.base / loaded.spec.debian.lock}: missing or empty Debian lock"
                " (create it with: enclave-audit lock update)"
            )
        locked = {p.name for p in loaded.lock}
        stray = [name for name in loaded.spec.debian.purge if name not in locked]
        if stray:
            raise SpecInvalid(
                f"{loaded.path}: debian.purge names {', '.join(stray)}, which the lock does"
                " not install"
            )
        key = self._cache_key(loaded, epoch)
        final = cache_dir("rootfs") / key
        tool = toolchain_versions().get("mmdebstrap", "mmdebstrap")
        if use_cache and (final / "rootfs.json").exists():
            return self._verified(final, tool, loaded)
        refs = [lock_input(p) for p in loaded.lock]
        resolver.locate(refs)
        progress.start("rootfs: fetching and checking the locked packages", len(refs))
        debs_in = []
        for pkg, ref in zip(loaded.lock, refs, strict=True):
            debs_in.append((pkg, resolver.path(ref)))
            progress.advance(1)
        progress.start("rootfs: mmdebstrap from the locked packages", None)
        started = time.perf_counter()
        with (
            atomic_directory(final) as out,
            tempfile.TemporaryDirectory(prefix="repo-", dir=out.parent) as tmp,
        ):
            work = Path(tmp)
            os.chmod(work, 0o755)  # noqa: S103 - apt's sandbox user reads the repository
            repo_line = write_local_repo(work / "repo", debs_in, suite=loaded.spec.debian.suite)
            sources = work / "sources.list"
            sources.write_text(sources_list_text(loaded.spec.debian.mirrors))
            os.chmod(sources, 0o644)
            debs = work / "debs"
            debs.mkdir()
            run_mmdebstrap(
                loaded,
                includes=[f"{p.name}={p.version}" for p in loaded.lock],
                epoch=epoch,
                tar=out / "rootfs.tar",
                debs=debs,
                sources=[repo_line],
                extra_hooks=(f"upload {sources} /etc/apt/sources.list",),
                uploads=(sources,),
            )
            check_installed(lock_from_debs(debs), loaded.lock)
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
