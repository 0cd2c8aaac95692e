"""A local apt repository that holds exactly the locked .debs, and nothing else.

mmdebstrap's ``essential`` variant installs every ``Essential: yes`` package at the
newest version its indices offer, then the ``--include`` list.  Pointed at the live
mirrors, that breaks as soon as a security update of an essential package appears
(the locked version would be a downgrade).  Pointed at this repository, the newest
version of every package is the locked one, because it is the only one, so what
gets installed is the lock, exactly, whatever the mirrors publish.

Layout: ``pool/<name>_<version>_<arch>.deb`` (each file verified against the lock
before it is linked in), ``dists/<suite>/main/binary-<arch>/Packages`` from
``dpkg-scanpackages --multiversion``, and a ``Release`` with the suite, codename,
architectures, component and the Packages file's sha256 (without it mmdebstrap
finds no essential packages).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from builder.spec import LockedPackage
from enclave_audit.errors import BuildStepFailed
from enclave_audit.tools import require, run

COMPONENT = "main"


def _pool_name(pkg: LockedPackage) -> str:
    version = pkg.version.split(":", 1)[-1]
    return f"{pkg.name}_{version}_{pkg.arch}.deb"


def write_local_repo(
    root: Path, debs: Iterable[tuple[LockedPackage, Path]], *, suite: str, arch: str = "amd64"
) -> str:
    """Lay out the repository under ``root``; returns its sources line for mmdebstrap.

    ``copy://`` (not ``file://``): apt copies the files into the chroot, which
    mmdebstrap requires for a repository outside it.  ``trusted=yes``: the repository
    is unsigned, and needs no signature, because every file in it was checked against
    the lock's sha256 before it was put there.
    """
    require("dpkg-scanpackages")
    pool = root / "pool"
    pool.mkdir(parents=True)
    for pkg, path in debs:
        target = pool / _pool_name(pkg)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    done = run(
        ["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"],
        cwd=root,
        what="dpkg-scanpackages",
    )
    packages = done.stdout
    if not packages.strip():
        raise BuildStepFailed(f"dpkg-scanpackages listed no packages in {pool}")
    index_dir = root / "dists" / suite / COMPONENT / f"binary-{arch}"
    index_dir.mkdir(parents=True)
    (index_dir / "Packages").write_bytes(packages)
    rel = f"{COMPONENT}/binary-{arch}/Packages"
    release = (
        f"Origin: enclave-audit\nLabel: locked inputs\nSuite: {suite}\nCodename: {suite}\n"
        f"Architectures: {arch}\nComponents: {COMPONENT}\n"
        f"Description: exactly the packages of a lock file\nSHA256:\n"
        f" {hashlib.sha256(packages).hexdigest()} {len(packages)} {rel}\n"
    )
    (root / "dists" / suite / "Release").write_text(release)
    return f"deb [trusted=yes] copy://{root} {suite} {COMPONENT}"
