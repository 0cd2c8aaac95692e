"""Pinned Debian packages: look them up in the apt index, download, verify sha256.

snapshot.debian.org is not reachable from our build machines, so a pin is a
(package, version, sha256) triple checked against what the configured mirror
serves: if the mirror no longer serves the version, :class:`PinnedInputUnavailable`;
if it serves different bytes, :class:`DigestMismatch`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from enclave_audit.errors import DigestMismatch, PinnedInputUnavailable
from enclave_audit.fsutil import cache_dir, sha256_file
from enclave_audit.tools import run


@dataclass(frozen=True)
class AptRecord:
    """What the apt index says about one package version."""

    package: str
    version: str
    filename: str
    sha256: str
    size: int


def apt_record(package: str, version: str) -> AptRecord | None:
    """The index record for ``package=version``, or None if apt does not know it."""
    done = run(["apt-cache", "show", f"{package}={version}"], check=False, what="apt-cache show")
    if done.returncode != 0:
        return None
    fields: dict[str, str] = {}
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            fields[key.strip()] = value.strip()
    if fields.get("Version") != version or "SHA256" not in fields:
        return None
    return AptRecord(
        package=package,
        version=version,
        filename=fields.get("Filename", ""),
        sha256=fields["SHA256"],
        size=int(fields.get("Size", "0")),
    )


def deb_file_name(package: str, version: str, arch: str = "all") -> str:
    # apt-get download writes the epoch's colon as %3a
    return f"{package}_{version.replace(':', '%3a')}_{arch}.deb"


def fetch_deb(package: str, version: str, sha256: str) -> Path:
    """The verified .deb for a pin, from the cache or downloaded with apt-get.

    The cached copy is re-verified on every use.
    """
    store = cache_dir("debs", sha256[:2])
    cached = store / f"{sha256}.deb"
    if cached.exists():
        got = sha256_file(cached)
        if got != sha256:
            raise DigestMismatch(
                f"cached {package} {version} at {cached} has sha256 {got}, pinned {sha256}"
                " (delete the file to download it again)"
            )
        return cached
    record = apt_record(package, version)
    if record is None:
        raise PinnedInputUnavailable(
            f"{package} {version} is not served by the configured apt sources"
            " (pinned version gone from the mirror; update the pin in the spec)"
        )
    if record.sha256 != sha256:
        raise DigestMismatch(
            f"{package} {version}: the apt index lists sha256 {record.sha256}, pinned {sha256}"
        )
    with tempfile.TemporaryDirectory(prefix="deb-", dir=store) as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - apt's _apt sandbox user writes here
        run(["apt-get", "download", f"{package}={version}"], cwd=Path(tmp), what="apt-get download")
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise PinnedInputUnavailable(f"apt-get download {package}={version} produced no .deb")
        h = hashlib.sha256()
        with open(debs[0], "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != sha256:
            raise DigestMismatch(
                f"downloaded {package} {version} has sha256 {h.hexdigest()}, pinned {sha256}"
            )
        shutil.move(debs[0], cached)
    return cached
