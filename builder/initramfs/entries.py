"""What goes into a ramdisk, before it is written: :class:`Entry` and planners.

A planner turns a source (a directory tree, an uncompressed tar archive, explicit
files) into entries; :func:`builder.initramfs.writer.write_newc` normalizes and
writes them.  Entries hold metadata and a way to open the data, never the data of
large files, so ramdisks are streamed.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from builder.initramfs.newc import EntryKind, kind_of_mode
from enclave_audit.errors import CpioError

Opener = Callable[[], IO[bytes]]


@dataclass(frozen=True)
class Entry:
    """One archive member to be written.

    ``link_group`` marks hard links: entries with the same group share one inode
    (one ino number, nlink = group size, data stored once on the last of them).
    """

    name: str
    kind: EntryKind
    perm: int
    mtime: int = 0
    size: int = 0
    opener: Opener | None = None
    link_target: str | None = None
    rdev: tuple[int, int] = (0, 0)
    link_group: Hashable | None = None

    def sort_key(self) -> tuple[bytes, ...]:
        """Component-wise byte order: a directory always precedes its contents."""
        return tuple(p.encode("utf-8", "surrogateescape") for p in self.name.split("/"))


def normalize_name(name: str) -> str:
    """``./a//b/`` -> ``a/b``; refuses ``..`` and empty names."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise CpioError(f"ramdisk entry name {name!r} is empty or contains '..'")
    return "/".join(parts)


def directory(name: str, perm: int = 0o755, mtime: int = 0) -> Entry:
    return Entry(normalize_name(name), EntryKind.DIRECTORY, perm, mtime)


def file_bytes(name: str, data: bytes, perm: int = 0o644, mtime: int = 0) -> Entry:
    return Entry(
        normalize_name(name), EntryKind.FILE, perm, mtime, len(data), lambda: io.BytesIO(data)
    )


def file_path(name: str, source: Path, perm: int | None = None, mtime: int | None = None) -> Entry:
    st = os.stat(source)
    return Entry(
        normalize_name(name),
        EntryKind.FILE,
        stat.S_IMODE(st.st_mode) if perm is None else perm,
        int(st.st_mtime) if mtime is None else mtime,
        st.st_size,
        _path_opener(source),
    )


def char_device(name: str, major: int, minor: int, perm: int = 0o600, mtime: int = 0) -> Entry:
    return Entry(normalize_name(name), EntryKind.CHAR_DEVICE, perm, mtime, rdev=(major, minor))


def symlink(name: str, target: str, mtime: int = 0) -> Entry:
    return Entry(
        normalize_name(name),
        EntryKind.SYMLINK,
        0o777,
        mtime,
        len(target.encode("utf-8", "surrogateescape")),
        link_target=target,
    )


def _path_opener(path: Path) -> Opener:
    def opener() -> IO[bytes]:
        return open(path, "rb")

    return opener


def _join(prefix: str, rel: str) -> str:
    return normalize_name(f"{prefix}/{rel}" if prefix else rel)


def plan_tree(root: Path, prefix: str = "") -> list[Entry]:
    """Entries for every file under ``root`` (``root`` itself becomes ``prefix``).

    Metadata comes from ``lstat``; hard links inside the tree are grouped by
    (st_dev, st_ino).  The walk order does not matter: the writer sorts.
    """
    root = Path(root)
    out: list[Entry] = []
    if prefix:
        st = os.lstat(root)
        out.append(
            Entry(
                normalize_name(prefix),
                EntryKind.DIRECTORY,
                stat.S_IMODE(st.st_mode),
                int(st.st_mtime),
            )
        )
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            out.append(_entry_from_stat(_join(prefix, rel), full, os.lstat(full)))
    return out


def _entry_from_stat(name: str, full: Path, st: os.stat_result) -> Entry:
    kind = kind_of_mode(st.st_mode)
    if kind is None or kind is EntryKind.SOCKET:
        raise CpioError(f"{full}: unsupported file type for a ramdisk")
    perm = stat.S_IMODE(st.st_mode)
    mtime = int(st.st_mtime)
    if kind is EntryKind.FILE:
        group = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
        return Entry(name, kind, perm, mtime, st.st_size, _path_opener(full), link_group=group)
    if kind is EntryKind.SYMLINK:
        target = os.readlink(full)
        return symlink(name, target, mtime)
    if kind in (EntryKind.CHAR_DEVICE, EntryKind.BLOCK_DEVICE):
        return Entry(name, kind, perm, mtime, rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)))
    return Entry(name, kind, perm, mtime)


def plan_tar(tar_path: Path, prefix: str = "") -> list[Entry]:
    """Entries for an uncompressed tar archive (mmdebstrap's or a Docker export).

    Tar hard links (LNKTYPE) join the group of the member they point to.  Data is
    read from the archive on demand, by offset, so nothing is extracted.
    """
    try:
        with tarfile.open(tar_path, "r:") as tf:
            members = tf.getmembers()
    except (tarfile.TarError, OSError) as exc:
        raise CpioError(f"{tar_path}: not a readable uncompressed tar archive: {exc}") from None
    out: list[Entry] = []
    if prefix:
        out.append(directory(prefix, 0o755))
    by_name: dict[str, tarfile.TarInfo] = {}
    groups: dict[str, str] = {}
    link_counts: dict[str, int] = {}
    for info in members:
        rel = str(PurePosixPath(info.name))
        if rel in ("", "."):
            continue
        by_name[rel] = info
        if info.islnk():
            target = str(PurePosixPath(info.linkname))
            root = groups.get(target, target)
            groups[rel] = root
            link_counts[root] = link_counts.get(root, 1) + 1
    for info in members:
        rel = str(PurePosixPath(info.name))
        if rel in ("", "."):
            if prefix and info.isdir():
                out[0] = directory(prefix, info.mode & 0o7777, int(info.mtime))
            continue
        name = _join(prefix, rel)
        mtime = int(info.mtime)
        perm = info.mode & 0o7777
        if info.isreg():
            group = rel if rel in link_counts else None
            out.append(
                Entry(
                    name,
                    EntryKind.FILE,
                    perm,
                    mtime,
                    info.size,
                    _tar_opener(tar_path, info),
                    link_group=group,
                )
            )
        elif info.islnk():
            root = groups[rel]
            src = by_name.get(root)
            if src is None or not src.isreg():
                raise CpioError(f"{tar_path}: hard link {rel!r} points to missing {root!r}")
            out.append(
                Entry(
                    name,
                    EntryKind.FILE,
                    src.mode & 0o7777,
                    int(src.mtime),
                    src.size,
                    _tar_opener(tar_path, src),
                    link_group=root,
                )
            )
        elif info.isdir():
            out.append(Entry(name, EntryKind.DIRECTORY, perm, mtime))
        elif info.issym():
            out.append(symlink(name, info.linkname, mtime))
        elif info.ischr() or info.isblk():
            kind = EntryKind.CHAR_DEVICE if info.ischr() else EntryKind.BLOCK_DEVICE
            out.append(Entry(name, kind, perm, mtime, rdev=(info.devmajor, info.devminor)))
        elif info.isfifo():
            out.append(Entry(name, EntryKind.FIFO, perm, mtime))
        else:
            raise CpioError(f"{tar_path}: member {rel!r} has an unsupported tar type {info.type!r}")
    return out


class _Slice(io.RawIOBase):
    def __init__(self, fh: IO[bytes], offset: int, size: int) -> None:
        super().__init__()
        self._fh = fh
        self._left = size
        fh.seek(offset)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left)
        if n <= 0:
            return 0
        data = self._fh.read(n)
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


def _tar_opener(tar_path: Path, info: tarfile.TarInfo) -> Opener:
    offset, size = info.offset_data, info.size

    def opener() -> IO[bytes]:
        return io.BufferedReader(_Slice(open(tar_path, "rb"), offset, size), 1 << 20)

    return opener


def concat(*groups: Iterable[Entry]) -> list[Entry]:
    return [e for g in groups for e in g]
