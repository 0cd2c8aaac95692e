"""The application half of the image: app sources, wheels, ``cmd`` and ``env``.

All of it becomes :class:`~builder.initramfs.Entry` objects added to the rootfs
entries of any backend, so the application ramdisk is laid out the same way
whichever backend made the root filesystem.  Files we add carry the build's
``SOURCE_DATE_EPOCH`` as mtime and normalized permissions (0644, or 0755 when
executable), so a fresh clone and an old checkout give the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from builder.initramfs import Entry, EntryKind, directory, file_bytes
from builder.spec import AppSpec, LoadedSpec, WheelSpec, refuse_escaping_link
from enclave_audit.errors import SpecInvalid
from enclave_audit.fsutil import sha256_file

ROOTFS = "rootfs"
APP_DIR = "app"
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", ".tmp")


@dataclass(frozen=True)
class SourceFile:
    rel: str  # relative to the source root, posix
    path: Path
    executable: bool
    sha256: str


def collect_sources(root: Path, packages: Iterable[str]) -> list[SourceFile]:
    """Every file of the listed packages, without caches and hidden files, sorted.

    The packages belong to the audited party: a package reached through a symlink,
    or a symlink inside one whose target lies outside the source root, is a
    :class:`SpecInvalid` (a committed link must not copy a host file into ``/app``).
    Symlinks that stay inside the tree, FIFOs, sockets and devices are not copied.
    """
    root = Path(root).resolve()
    out: list[SourceFile] = []
    for pkg in packages:
        base = root / pkg
        try:
            real = base.resolve(strict=True)
        except (OSError, RuntimeError):
            raise SpecInvalid(f"app.packages: {base} does not exist") from None
        if real != base or not real.is_dir():
            raise SpecInvalid(
                f"app.packages: {base} is reached through a symlink or is not a directory"
                " (application packages must be real directories of the source tree)"
            )
        for dirpath, dirnames, filenames in os.walk(base):
            for name in [*dirnames, *filenames]:
                refuse_escaping_link(Path(dirpath) / name, root)
            dirnames[:] = sorted(
                d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")
            )
            for name in sorted(filenames):
                if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                    continue
                path = Path(dirpath) / name
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                rel = path.relative_to(root).as_posix()
                out.append(SourceFile(rel, path, bool(st.st_mode & 0o111), sha256_file(path)))
    out.sort(key=lambda f: f.rel.encode())
    return out


def tree_files(
    loaded: LoadedSpec, backend: str, sources: list[SourceFile] | None = None
) -> list[SourceFile]:
    """The source-tree files that shape the image, for the manifest's tree digest.

    The application packages (``sources``, collected when not given) and, for the
    docker backend, every file of the docker build context (the Dockerfile included).
    """
    files = (
        list(sources)
        if sources is not None
        else collect_sources(loaded.source_root, loaded.spec.app.packages)
    )
    if backend == "docker":
        from builder.rootfs.docker import context_sources

        files += context_sources(loaded)
    files.sort(key=lambda f: f.rel.encode())
    return files


def tree_digest(files: Iterable[SourceFile]) -> str:
    """sha256 over ``rel NUL mode NUL sha256 LF`` of each file, in byte order of rel."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.rel}\0{'755' if f.executable else '644'}\0{f.sha256}\n".encode())
    return h.hexdigest()


def _opener(path: Path) -> IO[bytes]:
    return open(path, "rb")


def source_entries(files: Iterable[SourceFile], epoch: int) -> list[Entry]:
    out: list[Entry] = []
    dirs: set[str] = set()
    for f in files:
        name = f"{ROOTFS}/{APP_DIR}/{f.rel}"
        parent = PurePosixPath(name).parent
        while str(parent) not in dirs and str(parent) != ROOTFS:
            dirs.add(str(parent))
            parent = parent.parent
        size = f.path.stat().st_size
        out.append(
            Entry(
                name,
                EntryKind.FILE,
                0o755 if f.executable else 0o644,
                epoch,
                size,
                functools.partial(_opener, f.path),
            )
        )
    out += [directory(d, 0o755, epoch) for d in sorted(dirs)]
    return out


def control_entries(app: AppSpec, epoch: int) -> list[Entry]:
    """``cmd`` (argv, one per line) and ``env`` (KEY=VALUE per line), as nitro-cli writes them."""
    cmd = "".join(f"{arg}\n" for arg in app.cmd).encode()
    env = "".join(f"{k}={app.env[k]}\n" for k in sorted(app.env)).encode()
    return [file_bytes("cmd", cmd, 0o644, epoch), file_bytes("env", env, 0o644, epoch)]


# --- wheels -------------------------------------------------------------------------


def _zip_opener(zf: zipfile.ZipFile, member: str) -> IO[bytes]:
    return zf.open(member)


def wheel_entries(wheel: WheelSpec, path: Path, site: str, epoch: int) -> list[Entry]:
    """Install a wheel as archive entries: purelib/platlib files under ``site``.

    The wheel's own ``RECORD`` is kept as shipped (no local paths, no
    ``direct_url.json``); scripts, headers and data directories are not installed.
    """
    site_rel = f"{ROOTFS}/{site.strip('/')}"
    out: list[Entry] = []
    dirs: set[str] = set()
    dist_info_data = f"{wheel.name.replace('-', '_')}-{wheel.version}.data/"
    try:
        # one open archive shared by every entry's opener (the central directory of a
        # large wheel is parsed once); closed when the entries are dropped
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SpecInvalid(f"wheel {wheel.filename}: not a readable zip: {exc}") from None
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts:
            raise SpecInvalid(f"wheel {wheel.filename}: unsafe member name {name!r}")
        if name.lower().startswith(dist_info_data.lower()):
            sub = parts[1] if len(parts) > 1 else ""
            if sub not in ("purelib", "platlib"):
                continue
            name = "/".join(parts[2:])
        if not wheel.installs(name):
            continue
        target = f"{site_rel}/{name}"
        parent = PurePosixPath(target).parent
        while str(parent) not in dirs and str(parent) != ROOTFS:
            dirs.add(str(parent))
            parent = parent.parent
        mode = (info.external_attr >> 16) & 0o777
        out.append(
            Entry(
                target,
                EntryKind.FILE,
                0o755 if mode & 0o111 else 0o644,
                epoch,
                info.file_size,
                functools.partial(_zip_opener, zf, info.filename),
            )
        )
    out += [directory(d, 0o755, epoch) for d in sorted(dirs)]
    return out


def merge_dirs(base: list[Entry], extra: list[Entry]) -> list[Entry]:
    """``base + extra`` where directories already in ``base`` are not repeated."""
    have = {e.name for e in base}
    return [*base, *[e for e in extra if not (e.kind is EntryKind.DIRECTORY and e.name in have)]]
