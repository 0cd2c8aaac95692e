"""Deterministic streaming newc writer.

Normalization (what makes two builds byte-identical):

* entries sorted component-wise by name bytes (parents before children);
* uid and gid 0; mtimes clamped to the build's ``SOURCE_DATE_EPOCH``;
* inode numbers assigned 1, 2, 3... in archive order; device major/minor 0;
* nlink 2 for directories, the number of names for hard-linked files, else 1;
* hard links: data stored once, on the last name of the group (as GNU cpio
  and the kernel's ``gen_init_cpio`` do); earlier names carry size 0;
* no compression, "070701" magic, checksum field 0, the usual TRAILER!!!.

Data is copied from each entry's opener in 1 MiB chunks, so archive size does
not bound memory.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.initramfs.entries import Entry
from builder.initramfs.newc import (
    HEADER_SIZE,
    MAGIC_NEWC,
    TRAILER,
    EntryKind,
    RawHeader,
    pad4,
    type_bits,
)
from enclave_audit.errors import CpioError
from enclave_audit.fsutil import atomic_write

_CHUNK = 1 << 20


class NewcStream:
    """Low-level sequential writer; callers are responsible for order and uniqueness."""

    def __init__(self, out: IO[bytes], *, on_bytes: Callable[[int], None] | None = None) -> None:
        self._out = out
        self._on_bytes = on_bytes
        self.written = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.written += len(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))

    def header(
        self,
        name: str,
        *,
        mode: int,
        ino: int,
        nlink: int,
        mtime: int,
        size: int,
        rdev: tuple[int, int] = (0, 0),
        uid: int = 0,
        gid: int = 0,
    ) -> None:
        raw_name = name.encode("utf-8", "surrogateescape") + b"\0"
        hdr = RawHeader(
            magic=MAGIC_NEWC,
            ino=ino,
            mode=mode,
            uid=uid,
            gid=gid,
            nlink=nlink,
            mtime=mtime,
            filesize=size,
            devmajor=0,
            devminor=0,
            rdevmajor=rdev[0],
            rdevminor=rdev[1],
            namesize=len(raw_name),
            check=0,
        )
        self._write(hdr.encode() + raw_name + b"\0" * pad4(HEADER_SIZE + len(raw_name)))

    def data(self, source: IO[bytes], size: int, name: str) -> None:
        left = size
        while left > 0:
            chunk = source.read(min(left, _CHUNK))
            if not chunk:
                raise CpioError(f"ramdisk entry {name!r}: source shrank while being written")
            self._write(chunk)
            left -= len(chunk)
        if source.read(1):
            raise CpioError(f"ramdisk entry {name!r}: source grew while being written")
        self._write(b"\0" * pad4(size))

    def data_bytes(self, data: bytes) -> None:
        self._write(data + b"\0" * pad4(len(data)))

    def trailer(self) -> None:
        self.header(TRAILER, mode=0, ino=0, nlink=1, mtime=0, size=0)


@dataclass(frozen=True)
class WriteStats:
    members: int
    size: int


def ordered(entries: Iterable[Entry]) -> list[Entry]:
    """Sort and check: unique names, every parent directory present."""
    items = sorted(entries, key=Entry.sort_key)
    names: set[str] = set()
    dirs: set[str] = set()
    for e in items:
        if e.name in names:
            raise CpioError(f"ramdisk entry {e.name!r} appears twice")
        names.add(e.name)
        parent = e.name.rpartition("/")[0]
        if parent and parent not in dirs:
            raise CpioError(f"ramdisk entry {e.name!r}: parent directory {parent!r} is missing")
        if e.kind is EntryKind.DIRECTORY:
            dirs.add(e.name)
    return items


def write_newc(
    out: IO[bytes],
    entries: Iterable[Entry],
    *,
    epoch: int,
    on_bytes: Callable[[int], None] | None = None,
) -> WriteStats:
    """Write ``entries`` as a normalized newc archive (see the module docstring)."""
    items = ordered(entries)
    group_size: dict[Hashable, int] = {}
    for e in items:
        if e.link_group is not None and e.kind is EntryKind.FILE:
            group_size[e.link_group] = group_size.get(e.link_group, 0) + 1
    group_ino: dict[Hashable, int] = {}
    group_seen: dict[Hashable, int] = {}
    stream = NewcStream(out, on_bytes=on_bytes)
    ino = 0
    for e in items:
        mtime = min(max(e.mtime, 0), epoch)
        mode = type_bits(e.kind) | (e.perm & 0o7777)
        if e.kind is EntryKind.FILE and e.link_group is not None and group_size[e.link_group] > 1:
            g = e.link_group
            if g not in group_ino:
                ino += 1
                group_ino[g] = ino
            group_seen[g] = group_seen.get(g, 0) + 1
            last = group_seen[g] == group_size[g]
            size = e.size if last else 0
            stream.header(
                e.name, mode=mode, ino=group_ino[g], nlink=group_size[g], mtime=mtime, size=size
            )
            if last:
                _copy(stream, e)
            continue
        ino += 1
        nlink = 2 if e.kind is EntryKind.DIRECTORY else 1
        if e.kind is EntryKind.SYMLINK:
            assert e.link_target is not None
            target = e.link_target.encode("utf-8", "surrogateescape")
            stream.header(e.name, mode=mode, ino=ino, nlink=1, mtime=mtime, size=len(target))
            stream.data_bytes(target)
        elif e.kind is EntryKind.FILE:
            stream.header(e.name, mode=mode, ino=ino, nlink=1, mtime=mtime, size=e.size)
            _copy(stream, e)
        else:
            stream.header(e.name, mode=mode, ino=ino, nlink=nlink, mtime=mtime, size=0, rdev=e.rdev)
    stream.trailer()
    return WriteStats(members=len(items), size=stream.written)


def _copy(stream: NewcStream, e: Entry) -> None:
    if e.size == 0 and e.opener is None:
        stream.data_bytes(b"")
        return
    if e.opener is None:
        raise CpioError(f"ramdisk entry {e.name!r} has {e.size} bytes but no data source")
    try:
        with e.opener() as src:
            stream.data(src, e.size, e.name)
    except OSError as exc:
        raise CpioError(f"ramdisk entry {e.name!r}: cannot read its data: {exc}") from None


def write_ramdisk(
    path: Path,
    entries: Iterable[Entry],
    *,
    epoch: int,
    on_bytes: Callable[[int], None] | None = None,
) -> WriteStats:
    """Write a ramdisk file atomically."""
    with atomic_write(path) as fh:
        return write_newc(fh, entries, epoch=epoch, on_bytes=on_bytes)
